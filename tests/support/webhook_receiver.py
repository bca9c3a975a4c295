"""A real HTTP webhook receiver on 127.0.0.1 that fails the first requests it gets.

with WebhookReceiver(fail_first=2) as receiver:
    ... point the API at receiver.url ...
    wait_for(lambda: receiver.successes(), what="a delivery")
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


class WebhookReceiver:
    def __init__(self, *, fail_first: int = 0, failure_status: int = 500) -> None:
        self.fail_first, self.failure_status = fail_first, failure_status
        self._lock = threading.Lock()
        self._received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver._record(dict(self.headers), body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"

    def _record(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            failing = len(self._received) < self.fail_first
            status = self.failure_status if failing else 204
            self._received.append(Received(headers, body, status))
            return status

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def successes(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
