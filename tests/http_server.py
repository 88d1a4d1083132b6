"""A real HTTP server on loopback for source tests: images, errors, slow and oversized
responses, wrong content types, redirects, and fake image-search APIs."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Routes:
    def __init__(self):
        self.routes: dict[str, callable] = {}
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, dict, dict]] = []  # path, query, headers

    def add(self, path: str, handler) -> None:
        self.routes[path] = handler


def make_handler(routes: Routes):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            parts = urlsplit(self.path)
            routes.hits[parts.path] = routes.hits.get(parts.path, 0) + 1
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            routes.requests.append((parts.path, query, dict(self.headers)))
            handler = routes.routes.get(parts.path)
            if handler is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, headers, body = handler(query, routes.hits[parts.path], dict(self.headers))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers and body is not None and not callable(body):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if callable(body):
                    body(self.wfile)
                elif body:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


class LoopbackServer:
    def __init__(self):
        self.routes = Routes()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.routes))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(body: bytes, ctype: str = "image/jpeg", **headers):
    return lambda q, n, h: (200, {"Content-Type": ctype, **headers}, body)


def status(code: int):
    return lambda q, n, h: (code, {"Content-Type": "text/plain"}, b"error")


def slow(seconds: float, body: bytes):
    def handler(q, n, h):
        def write(w):
            time.sleep(seconds)
            w.write(body)
        return 200, {"Content-Type": "image/jpeg", "Content-Length": str(len(body))}, write
    return handler


def redirect(location: str, code: int = 302):
    return lambda q, n, h: (code, {"Location": location, "Content-Length": "0"}, b"")


def json_body(obj) -> bytes:
    return json.dumps(obj).encode()
