"""Group commit: write transactions submitted at the same time run as one.

Claims and reports arrive from many threads at once (REST workers, SDK
streams). Each in a transaction of its own, they queue for the same locks
(SQLite's single writer, a PostgreSQL run row) and each pays a commit.
Here the first caller leads: it runs its own work together with whatever
else has been submitted meanwhile, in one transaction, while the others
wait (without holding the GIL or a database connection). When it is done,
the longest waiter leads the next group. A caller alone runs at once, so
nothing waits for company: groups form only under load.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

W = TypeVar("W")
R = TypeVar("R")


class Member(Generic[W, R]):
    """One submitted piece of work and, once its group has run, its outcome."""

    __slots__ = ("_error", "_result", "_turn", "done", "work")

    def __init__(self, work: W) -> None:
        self.work = work
        self.done = False
        self._result: R | None = None
        self._error: BaseException | None = None
        # Set when the outcome is there, or when this member is to lead.
        self._turn = threading.Event()

    def succeed(self, result: R) -> None:
        self._result, self._error = result, None

    def fail(self, error: BaseException) -> None:
        self._error = error

    def outcome(self) -> R:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class GroupCommit(Generic[W, R]):
    """Runs submitted work in groups through ``run_group``, which gives every
    member of the group it is handed an outcome (``succeed`` / ``fail``), or
    raises: every member of the group then raises that error."""

    def __init__(
        self, run_group: Callable[[Sequence[Member[W, R]]], None], *, max_group: int = 32
    ) -> None:
        self._run_group = run_group
        self._max_group = max_group
        self._lock = threading.Lock()
        self._queue: list[Member[W, R]] = []
        # Whether a group is running; when False the queue is empty.
        self._busy = False

    @property
    def queued(self) -> int:
        """How many submissions wait for the next group."""
        with self._lock:
            return len(self._queue)

    def submit(self, work: W) -> R:
        """Runs ``work`` in the next group and returns its outcome."""
        member: Member[W, R] = Member(work)
        with self._lock:
            self._queue.append(member)
            lead = not self._busy
            self._busy = True
        if not lead:
            member._turn.wait()
        if not member.done:
            self._lead()
        return member.outcome()

    def _lead(self) -> None:
        with self._lock:
            group = self._queue[: self._max_group]
            del self._queue[: self._max_group]
        try:
            self._run_group(group)
        except BaseException as exc:
            for member in group:
                member.fail(exc)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0]._turn.set()  # leads the next group
                else:
                    self._busy = False
            for member in group:
                member.done = True
                member._turn.set()
