"""``hardneg inspect --serve``: a small HTTP server on 127.0.0.1 for runs too big to embed. ``/`` is the
page with the query list and the charts; ``/api/query/N`` is query N's detail as JSON, built from the
columnar arrays when asked for, with the texts of the documents it names."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from .data import PageData
from .page import page_html

HOST = "127.0.0.1"


def make_server(page: PageData, label: str, port: int = 0, cache_dir: str | None = None) -> ThreadingHTTPServer:
    """A server for ``page`` bound to 127.0.0.1 (``port=0``: any free port; read ``server.server_port``).
    Call ``serve_forever()`` on it, or :func:`start` for a background thread."""
    body = page_html(page.head(label), f"hardneg inspect: {label}", cache_dir).encode("utf-8")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, data: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                return self._send(200, body, "text/html; charset=utf-8")
            m = re.fullmatch(r"/api/query/(\d+)", path)
            if m and int(m.group(1)) < page.num_queries:
                with lock:
                    d: dict[str, Any] = page.details(np.array([int(m.group(1))]))[0]
                    d["docs"] = page.docs_of([d])
                return self._send(200, json.dumps(d, ensure_ascii=False).encode("utf-8"), "application/json")
            return self._send(404, b'{"error": "not found"}', "application/json")

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the address
            return

    return ThreadingHTTPServer((HOST, port), Handler)


def start(page: PageData, label: str, port: int = 0, cache_dir: str | None = None) -> ThreadingHTTPServer:
    """:func:`make_server`, serving from a daemon thread; ``shutdown()`` stops it."""
    server = make_server(page, label, port, cache_dir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
