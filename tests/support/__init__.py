"""Helpers shared by the test folders: paths, builders of real runs and workspaces, data layouts, a local SLURM.
Fixtures live in the ``conftest.py`` of the folder whose tests use them; the builders they call live here."""
