"""A local webhook receiver: a real HTTP server on 127.0.0.1 that keeps the JSON it is sent.

``t2c demo`` starts one so its alerts have somewhere to go; tests and ``bench/faults.py`` use it as
the far end of a webhook channel, with the faults of real receivers, each for the next N requests:

* ``fail_next``: answer 503 (a receiver that is down for a while);
* ``slow_next``: keep the message, then answer only after ``slow_seconds`` (a receiver that times
  out *after* delivery: the sender retries, and the receiver sees the same message twice);
* ``drop_next``: read the request and close the connection without an answer.

Every request's ``Idempotency-Key`` header is kept in ``keys`` (in arrival order, repeats included),
so a test can count deliveries and repeats the way a receiver that drops repeats would.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self, path: str = "/hook") -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.keys: list[str | None] = []
        self.fail_next = 0
        self.slow_next = 0
        self.slow_seconds = 0.0
        self.drop_next = 0
        self._path = path
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.paths.append(self.path)
                    if receiver.drop_next > 0:
                        receiver.drop_next -= 1
                        self.close_connection = True
                        self.connection.close()
                        return
                    failing = receiver.fail_next > 0
                    slow = not failing and receiver.slow_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.bodies.append(json.loads(body or b"{}"))
                        receiver.keys.append(self.headers.get("Idempotency-Key"))
                    if slow:
                        receiver.slow_next -= 1
                if slow:
                    time.sleep(receiver.slow_seconds)
                try:
                    self.send_response(503 if failing else 200)
                    self.end_headers()
                except OSError:  # the sender gave up waiting and closed the connection
                    pass

            def log_message(self, *args: Any) -> None:  # quiet: the caller reports what arrived
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
