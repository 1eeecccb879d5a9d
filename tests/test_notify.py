"""The wake-up rules of the notifier: topics wake every subscriber, ready work
wakes one able claimer per job, in turn. Fires are synchronous, so whether a
subscription was woken is read at once with ``wait(0)``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from trellis.server._notify import Notifier, Subscription, decode, encode


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    n = Notifier()
    yield n
    n.close()


def woken(subs: list[Subscription]) -> list[int]:
    return [i for i, sub in enumerate(subs) if sub.wait(0)]


def claimers(stack: ExitStack, n: Notifier, *label_sets: tuple[str, ...]) -> list[Subscription]:
    return [stack.enter_context(n.subscribe(work=("org", labels))) for labels in label_sets]


def test_one_ready_job_wakes_one_idle_claimer(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), (), ())
        notifier.fire((), {("org", ""): 1})
        assert len(woken(subs)) == 1


def test_claimers_take_turns(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), (), ())
        order = []
        for _ in range(6):
            notifier.fire((), {("org", ""): 1})
            order.extend(woken(subs))
        assert order == [0, 1, 2, 0, 1, 2]


def test_n_ready_jobs_wake_up_to_n_claimers(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), (), ())
        notifier.fire((), {("org", ""): 2})
        assert len(woken(subs)) == 2
        notifier.fire((), {("org", ""): 50})
        assert woken(subs) == [0, 1, 2]


def test_ready_work_goes_only_to_claimers_whose_labels_cover_it(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, ("linux",), ("gpu", "linux"), ("gpu",))
        notifier.fire((), {("org", "gpu,linux"): 5})
        assert woken(subs) == [1]
        notifier.fire((), {("org", "cuda"): 1})
        assert woken(subs) == []
        notifier.fire((), {("other-org", ""): 1})
        assert woken(subs) == []


def test_a_claimer_without_free_slots_is_passed_over(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), ())
        subs[0].accepting = False
        for _ in range(3):
            notifier.fire((), {("org", ""): 1})
            assert woken(subs) == [1]


def test_topics_wake_every_subscriber(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = [stack.enter_context(notifier.subscribe("run:1")) for _ in range(3)]
        other = stack.enter_context(notifier.subscribe("run:2"))
        notifier.fire(["run:1"])
        assert woken(subs) == [0, 1, 2]
        assert not other.wait(0)


def test_unsubscribed_claimers_are_not_woken(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as gone:
        pass
    with notifier.subscribe(work=("org", ())) as present:
        notifier.fire((), {("org", ""): 1})
        assert present.wait(0)
    assert not gone.wait(0)


def test_a_delayed_retry_wakes_one_claimer_when_due(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), ())
        notifier.fire_at(time.monotonic() + 0.05, "org", "")
        assert woken(subs) == []
        assert subs[0].wait(5.0) or subs[1].wait(5.0)
        assert woken(subs) == []


def test_wake_all_reaches_claimers_and_topic_subscribers(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as claimer, notifier.subscribe("t") as follower:
        notifier.wake_all()
        assert claimer.wait(0) and follower.wait(0)


def test_payloads_round_trip_and_degrade_to_wake_everyone_when_too_large() -> None:
    ready = {("org", "gpu,linux"): 3, ("o2", ""): 1}
    assert decode(encode(["run:1", "logs:7"], ready)) == (["run:1", "logs:7"], ready)
    huge = [f"logs:{i}" for i in range(2000)]
    assert encode(huge, {}) == "*"
    assert decode("*") is None


def test_each_woken_claimer_holds_its_share_of_the_work(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), ())
        notifier.fire((), {("org", ""): 5})
        shares = sorted(notifier.take_work(sub).get(("org", ""), 0) for sub in subs)
        assert shares == [2, 3]
        assert notifier.take_work(subs[0]) == {}


def test_work_given_to_a_claimer_that_filled_up_goes_to_another(notifier: Notifier) -> None:
    with ExitStack() as stack:
        busy, idle = claimers(stack, notifier, (), ())
        notifier.fire((), {("org", ""): 1})
        assert woken([busy, idle]) == [0]
        work = notifier.take_work(busy)
        busy.accepting = False  # its claim filled its last slot with other jobs
        notifier.pass_on(busy, work)
        assert woken([busy, idle]) == [1]
        assert notifier.take_work(idle) == {("org", ""): 1}


def test_work_given_to_a_claimer_that_leaves_goes_to_another(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as staying:
        with notifier.subscribe(work=("org", ())) as leaving:
            notifier.fire((), {("org", ""): 1})
            assert woken([staying, leaving]) == [0]
            notifier.fire((), {("org", ""): 1})
            assert woken([staying, leaving]) == [1]
        assert staying.wait(0)
        assert notifier.take_work(staying) == {("org", ""): 2}


def test_passed_on_work_with_no_taker_is_dropped_for_the_poll(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as only:
        notifier.fire((), {("org", ""): 1})
        work = notifier.take_work(only)
        only.accepting = False
        notifier.pass_on(only, work)
        assert only.wait(0)  # the first fire's wake-up, nothing more
        assert not only.wait(0)
        assert notifier.take_work(only) == {}
