"""Deliverables: predictions for unlabelled data (:mod:`.predict`, the ``predict`` stage in :mod:`.stage`), the
model they come from (:mod:`.model_source`: ``load_predictor``), georeferenced outputs (:mod:`.geo`: GeoTIFF in,
Cloud-Optimized GeoTIFF out; :mod:`.polygons`: per-class polygons) and benchmark submissions
(:mod:`.submission`: table-driven formats, building and validating the zip). Importing this package imports
neither torch nor rasterio."""
