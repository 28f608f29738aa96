"""MapSage Workbench served with deep links that probe nothing: ``streamlit run app/serve.py``.

Streamlit's frontend, opened on a page's own address (``/run_detail?run=…``), first looks for its server under
that page (``/run_detail/_stcore/health`` and ``/run_detail/_stcore/host-config``, two 404s in the browser console)
before the root (streamlit/streamlit#7074). It skips the probe when the page names its server in
``window.__streamlit.BACKEND_BASE_URL``; this ASGI app (``st.App``, the same Streamlit server and script,
``app/main.py``) writes that line into the HTML page it serves: the app's root (with ``server.baseUrlPath``)."""
from __future__ import annotations

import json

import streamlit as st
from starlette.middleware import Middleware
from streamlit import config as _config

MAIN = "main.py"


def _base_path() -> str:
    base = (_config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/" if base else "/"


def base_script(base_path: str) -> bytes:
    """The ``<script>`` that names the server's root for the frontend (its origin plus ``base_path``)."""
    return ("<script>window.__streamlit=Object.assign({BACKEND_BASE_URL:window.location.origin+"
            f"{json.dumps(base_path)}}},window.__streamlit||{{}});</script>").encode()


class BackendBaseUrl:
    """ASGI middleware: into every HTML page served, right after ``<head>``, the script of :func:`base_script`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        last = str(scope.get("path", "")).rstrip("/").rsplit("/", 1)[-1]
        if "." not in last or last.endswith(".html"):
            # a page (index.html for every page path): asked for uncompressed, so the line can go in
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                          if k.lower() != b"accept-encoding"]}
        start: dict = {}
        body: list[bytes] = []
        is_html = False

        async def wrapped(message) -> None:
            nonlocal is_html
            if message["type"] == "http.response.start":
                headers = dict((k.lower(), v) for k, v in message.get("headers", []))
                is_html = headers.get(b"content-type", b"").startswith(b"text/html") and \
                    b"content-encoding" not in headers
                if not is_html:
                    await send(message)
                else:
                    start.update(message)
                return
            if message["type"] == "http.response.body" and is_html:
                body.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                html = b"".join(body)
                html = html.replace(b"<head>", b"<head>" + base_script(_base_path()), 1)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(html)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": html})
                return
            await send(message)

        await self.app(scope, receive, wrapped)


app = st.App(MAIN, middleware=[Middleware(BackendBaseUrl)])
