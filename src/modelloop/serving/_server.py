"""Running the app on uvicorn: auth checked before binding, readiness dropped on SIGTERM, and
in-flight requests drained within the grace period before the process exits."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from modelloop.serving._app import ServeConfig, create_app

if TYPE_CHECKING:
    from modelloop._config import Settings

__all__ = ["process_age_s", "serve"]

log = logging.getLogger("modelloop.serving")


def process_age_s() -> float:
    """Seconds since this process started (from /proc where there is one)."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat, counted after the command name
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.process_time()


def serve(
    models: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServeConfig | None = None,
    settings: Settings | None = None,
    allow_unauthenticated: bool = False,
    drain_delay_s: float = 0.0,
    log_level: str = "info",
) -> None:
    """Serve ``models`` until SIGTERM or SIGINT.

    Off loopback the server needs bearer tokens in ``config.tokens``; without them it refuses to
    start unless ``allow_unauthenticated`` is set. On SIGTERM readiness turns false at once, the
    server keeps answering for ``drain_delay_s`` (so a load balancer can take it out), then stops
    accepting connections and waits up to ``config.grace_s`` for in-flight requests.
    """
    import uvicorn

    from modelloop.serving._auth import check_bind

    config = config or ServeConfig()
    # The prediction log and the model run on their own threads; hand the interpreter back to
    # the event loop every millisecond rather than every 5, so their work delays no response by
    # more than that.
    sys.setswitchinterval(0.001)
    # Requests and the prediction log's buffer make many short-lived containers; collecting the
    # young generation less often keeps full passes over the buffer rare.
    gc.set_threshold(50_000, 20, 20)
    check_bind(
        host,
        list(config.tokens),
        allow_unauthenticated=allow_unauthenticated,
        users=config.users is not None,
    )
    app = create_app(models, config=config, settings=settings)
    state = app.state.modelloop

    class _Server(uvicorn.Server):
        _exit_at: float | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not state.draining:
                log.info("signal %s: readiness off, draining", signal.Signals(sig).name)
            state.draining = True
            state.set_ready(False)
            if self.should_exit or drain_delay_s <= 0 or sig == signal.SIGINT:
                super().handle_exit(sig, frame)
                # a graceful stop asked for by SIGTERM ends with exit status 0
                if sig == signal.SIGTERM and signal.SIGTERM in self._captured_signals:
                    self._captured_signals.remove(signal.SIGTERM)
            elif self._exit_at is None:
                self._exit_at = time.monotonic() + drain_delay_s

        async def on_tick(self, counter: int) -> bool:
            if self._exit_at is not None and time.monotonic() >= self._exit_at:
                self.should_exit = True
            return await super().on_tick(counter)

    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, config.grace_s)),
        lifespan="on",
        server_header=False,
    )
    server: Any = _Server(uv_config)

    def stop() -> None:
        server.should_exit = True

    state.on_fatal = stop
    server.run()
    if state.startup_error is not None:
        raise state.startup_error
