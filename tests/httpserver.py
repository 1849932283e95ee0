"""A real HTTP server on 127.0.0.1 for the source tests and the scrape benchmark: serves real images
(made with Pillow) and faults, and counts the requests per path.

    with LocalServer() as server:
        server.route("/a.jpg", image(jpeg_bytes("red")))
        server.route("/flaky", sequence(status(500), image(jpeg_bytes("blue"))))
        fetch(server.url("/a.jpg")); assert server.hits["/a.jpg"] == 1

A responder is `fn(handler, hit)` where `hit` counts this path's requests from 1.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from PIL import Image

from imgclass.config.params import Params, ScrapeParams

Responder = Callable[[BaseHTTPRequestHandler, int], None]


# --- images -----------------------------------------------------------------------------------

def jpeg_bytes(color, size: tuple[int, int] = (48, 40)) -> bytes:
    """A real JPEG; distinct colours give distinct bytes (and content hashes)."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def distinct_jpegs(count: int, size: tuple[int, int] = (48, 40)) -> list[bytes]:
    return [jpeg_bytes(((i * 37) % 256, (i * 91) % 256, (i * 53 + 7) % 256), size) for i in range(count)]


# --- responders -------------------------------------------------------------------------------

def send(handler: BaseHTTPRequestHandler, code: int, body: bytes = b"", content_type: str = "application/octet-stream",
         headers: dict | None = None, content_length: bool = True) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    if content_length:
        handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def image(data: bytes, content_type: str = "image/jpeg", delay: float = 0.0) -> Responder:
    def respond(handler, hit):
        time.sleep(delay)
        send(handler, 200, data, content_type)
    return respond


def status(code: int, headers: dict | None = None, body: bytes = b"error") -> Responder:
    return lambda handler, hit: send(handler, code, body, "text/plain", headers)


def redirect(location: str, code: int = 302) -> Responder:
    return lambda handler, hit: send(handler, code, b"", "text/plain", {"Location": location})


def json_body(obj) -> Responder:
    return lambda handler, hit: send(handler, 200, json.dumps(obj).encode(), "application/json")


def sequence(*responders: Responder) -> Responder:
    """The n-th request gets the n-th responder; the last one answers every later request."""
    return lambda handler, hit: responders[min(hit, len(responders)) - 1](handler, hit)


def stall(seconds: float) -> Responder:
    """Sends nothing for `seconds` (longer than the client's timeout), then a small error."""
    def respond(handler, hit):
        time.sleep(seconds)
        send(handler, 503)
    return respond


def oversized(size: int, content_length: bool = True) -> Responder:
    """A `size`-byte JPEG-looking body; without Content-Length it ends when the connection closes."""
    def respond(handler, hit):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        if content_length:
            handler.send_header("Content-Length", str(size))
        handler.end_headers()
        body = b"\xff\xd8\xff" + bytes(size - 3)
        for start in range(0, size, 64 * 1024):
            handler.wfile.write(body[start:start + 64 * 1024])
    return respond


def trickle(data: bytes, pieces: int, interval: float) -> Responder:
    """Sends `data` in `pieces`, `interval` seconds apart: each read is quick, the whole is slow."""
    def respond(handler, hit):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            handler.wfile.write(data[start:start + step])
            handler.wfile.flush()
            time.sleep(interval)
    return respond


def dropped(data: bytes, after: int) -> Responder:
    """Promises `len(data)` bytes, sends `after` of them, then drops the connection."""
    def respond(handler, hit):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:after])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
    return respond


# --- the server -------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self):
        owner = self.server.owner
        path = urlsplit(self.path).path
        with owner.lock:
            owner.hits[path] += 1
            owner.queries.append(self.path)
            hit = owner.hits[path]
        responder = owner.routes.get(path)
        if responder is None:
            send(self, 404, b"not found", "text/plain")
        else:
            responder(self, hit)

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up on purpose (byte limit, timeout)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        pass


class LocalServer:
    """ThreadingHTTPServer on a free 127.0.0.1 port, in a daemon thread."""

    def __init__(self, routes: dict[str, Responder] | None = None):
        self.routes: dict[str, Responder] = dict(routes or {})
        self.hits: Counter = Counter()
        self.queries: list[str] = []  # raw request paths with query strings, in order
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def route(self, path: str, responder: Responder) -> str:
        self.routes[path] = responder
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- params -----------------------------------------------------------------------------------

def make_params(classes: list[str], **scrape) -> Params:
    """Params with only `classes` and the scrape section set. `model_construct` skips the checks of
    the other sections (models would import torch); the scrape section itself is validated."""
    return Params.model_construct(classes=classes, scrape=ScrapeParams.model_validate(scrape))
