"""Error analysis and the correction loop, as pure numpy helpers (no store, no UI):

* :mod:`.errors_map` -- per-pixel error layers of one tile (correct / false positive / false negative per class,
  one confusion cell, confidence, disagreement between two masks) and per-tile confusion through the one metrics
  engine (:class:`mapsage.metrics.SegMetrics`);
* :mod:`.uncertainty` -- per-tile uncertainty scores (entropy, margin, disagreement between ensemble members or
  TTA views) and the review queue ordered by them;
* :mod:`.labels` -- corrections as immutable label versions on disk, the dataset view "original + corrections
  vN", and the export of a version as a dataset folder in the dataset's own mask format.
"""
