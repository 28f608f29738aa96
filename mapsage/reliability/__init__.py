"""The reliability card: corruption robustness, calibration, spatial statistics and extent invariance of a
checkpoint (see :mod:`mapsage.reliability.stage`)."""
