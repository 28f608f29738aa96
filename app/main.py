"""MapSage Workbench: ``streamlit run app/main.py``.

The entry point only sets the page up, refreshes the store (scheduler pass + non-blocking ingest: cheap, never
waits on training work) and routes to one page file under ``app/views/``. Pages read the store and start or stop
jobs through ``runners.api``; nothing here runs training code."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` from a plain clone, without an editable install
    sys.path.insert(0, str(ROOT))

from app.widgets.nav import route  # noqa: E402

route()
