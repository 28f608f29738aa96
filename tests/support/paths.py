"""Where the project and its bundled data are, for every test folder."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DUBAI_ROOT = PROJECT_ROOT / "data" / "demo" / "dubai-aerial" / "Semantic segmentation dataset"
LOVEDA_ROOT = PROJECT_ROOT / "tests" / "data" / "loveda"
CHROMIUM = Path("/usr/bin/chromium")
