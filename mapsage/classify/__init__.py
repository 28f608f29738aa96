"""Image classification (``task: classification``): CSV or class-folder datasets, timm classifiers from local
weights, the plan's losses, samplers and Mixup/CutMix, k-fold CV grouped by source tile, temperature scaling, fold
fusion into ``submission.csv`` and its validator, Grad-CAM. Stage kind ``classify`` (:mod:`.stage`); CLI
``mapsage classify``; metrics in :mod:`mapsage.metrics.classification`."""
