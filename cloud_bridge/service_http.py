"""The HTTP side of a cloud service: /healthz, /readyz and /metrics (Prometheus).

    server = ProbeServer(HttpConfig(port=9100), registry, live=..., ready=...).start()

/healthz answers 200 while `live()` holds (the process does its work: restart it
otherwise), /readyz 200 while `ready()` holds (it can take work now: broker and store
reachable); both say why in a small JSON body. Each check returns (ok, detail).
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .ops_config import HttpConfig

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


class ProbeServer:
    def __init__(self, config: HttpConfig, registry: CollectorRegistry, live: Check, ready: Check):
        self.config, self.registry, self.live, self.ready = config, registry, live, ready
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.port

    def start(self) -> "ProbeServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):   # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    check = owner.live if path == "/healthz" else owner.ready
                    try:
                        ok, detail = check()
                    except Exception as e:   # a failing check is an answer, not a crash
                        ok, detail = False, f"check failed: {e}"
                    body = json.dumps({"ok": ok, "detail": detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found: /healthz, /readyz, /metrics\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:   # probes every few seconds would flood the log
                pass

        self._server = ThreadingHTTPServer((self.config.host, self.config.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()
        log.info("HTTP: /healthz /readyz /metrics on %s:%d", self.config.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def bridge_probe_server(service) -> ProbeServer | None:
    """The bridge's probes (None when http.port is 0). Live: every worker thread runs.
    Ready: subscribed at the broker and the store answers."""
    config = service.config.http
    if not config.port:
        return None

    def live() -> tuple[bool, str]:
        dead = [t.name for t in getattr(service, "_threads", []) if not t.is_alive()]
        return (not dead, f"threads stopped: {dead}" if dead else "workers running")

    def ready() -> tuple[bool, str]:
        stats = service.stats()
        if not stats["subscribed"]:
            return False, "not subscribed at the broker"
        if not service.store.ping():
            return False, "the sample store does not answer"
        return True, f"subscribed; store answers; inbox {stats['queued']}"

    return ProbeServer(config, service.metrics.registry, live, ready).start()
