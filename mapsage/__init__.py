"""MapSage: the ML library of the workbench (config, data, models, losses, training, inference, metrics,
refinement, health checks, reports). Importable without any UI; importing the package does not import torch."""
__version__ = "0.1.0"
