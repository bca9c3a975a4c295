"""A small routed JSON HTTP server on the standard library, shared by platform and collector."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ._release import VERSION

log = logging.getLogger("kangpai_ems.http")

MAX_BODY = 32 * 1024 * 1024


class HttpError(Exception):
    """Answer the request with this status and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    client: str

    def json(self) -> object:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from None

    def int_arg(self, name: str, default: int, maximum: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HttpError(400, f"{name} must be an integer") from None
        if not 1 <= value <= maximum:
            raise HttpError(400, f"{name} must be in 1..{maximum}")
        return value


@dataclass
class Response:
    status: int = 200
    body: object = None
    content_type: str = "application/json"
    text: str | None = field(default=None)


Handler = Callable[[Request], Response]
Routes = dict[tuple[str, str], Handler]


def _make_handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class JsonHandler(BaseHTTPRequestHandler):
        server_version = f"kangpai-ems/{VERSION}"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    raise HttpError(413, "body too large")
                body = self.rfile.read(length) if length else b""
                handler = routes.get((method, parts.path))
                if handler is None:
                    known = {path for _, path in routes}
                    raise HttpError(405 if parts.path in known else 404,
                                    f"no route {method} {parts.path}")
                response = handler(Request(method, parts.path, query, body,
                                           self.client_address[0]))
            except HttpError as exc:
                response = Response(exc.status, {"error": exc.message})
            except Exception as exc:  # the server must outlive one bad request
                log.exception("%s %s failed", method, parts.path)
                response = Response(500, {"error": f"{type(exc).__name__}: {exc}"})
            self._send(response)

        def _send(self, response: Response) -> None:
            if response.text is not None:
                payload = response.text.encode()
            else:
                payload = (json.dumps(response.body, sort_keys=True) + "\n").encode()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

    return JsonHandler


def start(listen: str, port: int, routes: Routes) -> ThreadingHTTPServer:
    """Bind and serve in a daemon thread; the caller stops it with `.shutdown()`."""
    server = ThreadingHTTPServer((listen, port), _make_handler(routes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
