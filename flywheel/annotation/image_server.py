"""Images to labelling tools by URL: a small read-only HTTP server over the content store.

Label Studio's tasks then carry ``<base>/images/<sha256>`` instead of the image inlined as
base64 (which bloats every task, the project export and Label Studio's database). Keys are
content hashes, so a URL names exactly one image and cannot point outside the store.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_KEY = re.compile(r"^/images/([0-9a-f]{64})$")


class ImageServer:
    """Serves ``GET /images/<sha256>`` from ``lookup`` (key -> bytes, or None when unknown)."""

    def __init__(self, lookup: Callable[[str], bytes | None], host: str = "127.0.0.1", port: int = 0,
                 public_url: str | None = None):
        from flywheel.filters.decode import sniff_image_type

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                match = _KEY.match(self.path.split("?", 1)[0])
                data = lookup(match.group(1)) if match else None
                if data is None:
                    self.send_error(404, "no such image")
                    return
                self.send_response(200)
                self.send_header("Content-Type", sniff_image_type(data[:16]) or "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "public, max-age=31536000, immutable")  # content-addressed
                self.send_header("Access-Control-Allow-Origin", "*")  # Label Studio's page fetches it
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: a labelling session fetches many images
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.url = (public_url or f"http://{host}:{self.httpd.server_address[1]}").rstrip("/")
        self._thread: threading.Thread | None = None

    def url_for(self, key: str) -> str:
        return image_url(self.url, key)

    def start(self) -> ImageServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="image-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def image_url(base: str, key: str) -> str:
    """The URL of one image under an image server's ``base``."""
    return f"{base.rstrip('/')}/images/{key}"
