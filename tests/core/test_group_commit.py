"""Group commit: the leader/follower protocol, with real threads."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from conftest import wait_until

# Group commit is the engine's internal batching; its joins, leader hand-over and
# failures can be ordered deterministically only through its own API.
from trellis.server.core._group_commit import GroupCommit, Member


class Recorder:
    """A ``run_group`` that doubles numbers, records its groups, can be held
    inside a group, and fails the members or groups it is told to."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.refuse: set[int] = set()
        self.crash_on: int | None = None

    def __call__(self, members: Sequence[Member[int, int]]) -> None:
        self.groups.append([m.work for m in members])
        self.inside.set()
        assert self.release.wait(10)
        if self.crash_on in [m.work for m in members]:
            raise RuntimeError("run_group broke")
        for m in members:
            if m.work in self.refuse:
                m.fail(ValueError(f"refused {m.work}"))
            else:
                m.succeed(m.work * 2)


def submit_in_thread(
    group: GroupCommit[int, int], work: int, out: dict[int, object]
) -> threading.Thread:
    def run() -> None:
        try:
            out[work] = group.submit(work)
        except Exception as exc:
            out[work] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def queue_behind_a_running_group(
    rec: Recorder, group: GroupCommit[int, int], works: Sequence[int]
) -> dict[int, object]:
    """Holds a group of one (work 0) running while ``works`` are submitted one
    by one (each queued before the next), then lets everything finish; returns
    each submission's outcome (a result or the exception raised)."""
    out: dict[int, object] = {}
    rec.release.clear()
    threads = [submit_in_thread(group, 0, out)]
    assert rec.inside.wait(10)
    for n, work in enumerate(works, start=1):
        threads.append(submit_in_thread(group, work, out))
        wait_until(lambda n=n: group.queued == n)
    rec.release.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    return out


def test_a_lone_submission_runs_at_once_in_a_group_of_its_own() -> None:
    rec = Recorder()
    group = GroupCommit(rec)
    assert group.submit(21) == 42
    assert group.submit(5) == 10
    assert rec.groups == [[21], [5]]


def test_submissions_made_while_a_group_runs_form_the_next_group_in_order() -> None:
    rec = Recorder()
    group: GroupCommit[int, int] = GroupCommit(rec)
    out = queue_behind_a_running_group(rec, group, (1, 2, 3))
    assert rec.groups == [[0], [1, 2, 3]]
    assert out == {0: 0, 1: 2, 2: 4, 3: 6}


def test_groups_are_at_most_max_group_long() -> None:
    rec = Recorder()
    group: GroupCommit[int, int] = GroupCommit(rec, max_group=2)
    out = queue_behind_a_running_group(rec, group, (1, 2, 3))
    assert rec.groups == [[0], [1, 2], [3]]
    assert out == {0: 0, 1: 2, 2: 4, 3: 6}


def test_a_refused_member_raises_alone() -> None:
    rec = Recorder()
    rec.refuse = {2}
    group: GroupCommit[int, int] = GroupCommit(rec)
    out = queue_behind_a_running_group(rec, group, (1, 2, 3))
    assert out[1] == 2 and out[3] == 6
    assert isinstance(out[2], ValueError) and str(out[2]) == "refused 2"


def test_a_broken_group_fails_its_members_and_the_next_group_still_runs() -> None:
    rec = Recorder()
    rec.crash_on = 1
    group: GroupCommit[int, int] = GroupCommit(rec)
    out = queue_behind_a_running_group(rec, group, (1, 2))
    assert out[0] == 0
    assert all(isinstance(out[w], RuntimeError) for w in (1, 2))
    assert group.submit(7) == 14  # not left busy
    with pytest.raises(RuntimeError, match="broke"):
        group.submit(1)
