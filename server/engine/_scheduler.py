"""The scheduler thread of a replica: every replica runs one, and each fire
still starts one run, because a fire is claimed in the database (see
``Service.fire_schedules``), not here."""

from __future__ import annotations

import logging
import threading

from trellis.server.engine.service import CatchUp, Service

log = logging.getLogger(__name__)


class Scheduler:
    """Fires the due schedules every ``interval_secs`` until stopped.

    A fire later than twice the interval counts as missed (for ``skip``).
    """

    def __init__(self, service: Service, *, interval_secs: float, catch_up: CatchUp) -> None:
        self.service = service
        self.interval_secs = interval_secs
        self.catch_up: CatchUp = catch_up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="trellis-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def run_once(self) -> int:
        """One pass: the runs it started."""
        grace_ms = max(1000, int(self.interval_secs * 2000))
        return self.service.fire_schedules(catch_up=self.catch_up, grace_ms=grace_ms)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                started = self.run_once()
                if started:
                    log.info("scheduler: %d run(s) started", started)
            except Exception:
                log.exception("scheduler pass failed; retrying next interval")
            self._stop.wait(self.interval_secs)


__all__ = ["Scheduler"]
