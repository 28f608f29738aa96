"""The process layer: the ``mapsage`` command line, stage entry points, the job lifecycle and GPU slots."""
