"""The fake Hub of tests/hub_server.py, sending file bodies slowly, in small chunks: a download then takes long
enough to be killed part-way through a file, the case that `rpo-bench download` must continue from."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer

from tests.hub_server import FakeHub, _handler_for


class SlowHub(FakeHub):
    def __init__(self, chunk: int = 16_384, pause: float = 0.01) -> None:
        super().__init__()
        self._server.server_close()  # the parent's server never started; this one sends slowly instead
        base = _handler_for(self)

        class SlowHandler(base):
            def _send(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
                if not body or len(payload) <= chunk:
                    return super()._send(status, headers, payload, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    for start in range(0, len(payload), chunk):
                        self.wfile.write(payload[start:start + chunk])
                        self.wfile.flush()
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed mid-file: what these tests do on purpose
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
