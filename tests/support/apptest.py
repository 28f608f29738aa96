"""Helpers for tests that drive the app under Streamlit's AppTest: open a page with query parameters, read its
text, read its plotly figures (including plotly's typed-array JSON)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def open_app(page: str | None = None, timeout: float = 120, **query) -> AppTest:
    """The app's entry script run once, then ``page`` (a file under app/) opened with ``query`` as its query
    parameters; fails the test on any exception the app raised."""
    at = AppTest.from_file(MAIN, default_timeout=timeout)
    at.run()
    if page:
        for k, v in query.items():
            at.query_params[k] = v
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    """Every markdown, caption, alert, subheader and title on the page, one per line."""
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.info] + \
            [e.value for e in at.warning] + [e.value for e in at.success] + [e.value for e in at.error] + \
            [e.value for e in at.subheader] + [e.value for e in at.title]
    return "\n".join(str(p) for p in parts)


def plotly_array(v) -> np.ndarray:
    """A plotly JSON array: a plain list, or plotly's typed-array form {dtype, bdata (base64), shape}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape:
            a = a.reshape([int(x) for x in str(shape).split(",")])
        return a
    return np.asarray(v)


def figures_by_title(at: AppTest) -> dict[str, dict]:
    """The page's plotly figures as JSON specs, keyed by their title text."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = (spec.get("layout", {}).get("title") or {}).get("text", "")
        out[title] = spec
    return out
