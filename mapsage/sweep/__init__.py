"""Hyperparameter sweeps on Optuna: the ``sweep:`` block's search space (:mod:`.space`), the study stored in the
workspace (:mod:`.study`) and the trial side -- per-epoch reports and pruning inside a training run
(:mod:`.trial`). The driver that launches trials as ordinary runs is ``runners.sweep``."""
