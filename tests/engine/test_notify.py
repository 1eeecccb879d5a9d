"""The wake-up rules of the notifier: topics wake every subscriber, ready work
wakes one able claimer per job, in turn. Fires are synchronous, so whether a
subscription was woken is read at once with ``wait(0)``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from conftest import wait_until

from trellis.server.engine import Notifier, PgBridge, Subscription

# Long enough for a notification to cross PostgreSQL under a loaded test run; each
# wait returns as soon as it arrives.
DELIVERY = 20.0


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
        notifier.fire((), {("org", "", "c"): 1})
        assert len(woken(subs)) == 1


def test_claimers_take_turns(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), (), ())
        order = []
        for _ in range(6):
            notifier.fire((), {("org", "", "c"): 1})
            order.extend(woken(subs))
        assert order == [0, 1, 2, 0, 1, 2]


def test_n_ready_jobs_wake_up_to_n_claimers(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), (), ())
        notifier.fire((), {("org", "", "c"): 2})
        assert len(woken(subs)) == 2
        notifier.fire((), {("org", "", "c"): 50})
        assert woken(subs) == [0, 1, 2]


def test_ready_work_goes_only_to_claimers_whose_labels_cover_it(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, ("linux",), ("gpu", "linux"), ("gpu",))
        notifier.fire((), {("org", "gpu,linux", "c"): 5})
        assert woken(subs) == [1]
        notifier.fire((), {("org", "cuda", "c"): 1})
        assert woken(subs) == []
        notifier.fire((), {("other-org", "", "c"): 1})
        assert woken(subs) == []


def test_ready_work_goes_only_to_claimers_that_run_its_command(notifier: Notifier) -> None:
    with ExitStack() as stack:
        build = stack.enter_context(notifier.subscribe(work=("org", ()), commands=frozenset({"b"})))
        anything = stack.enter_context(notifier.subscribe(work=("org", ())))
        nothing = stack.enter_context(notifier.subscribe(work=("org", ()), commands=frozenset()))
        subs = [build, anything, nothing]
        for _ in range(2):
            notifier.fire((), {("org", "", "make test"): 1})
            assert woken(subs) == [1]
        # A job of its command goes to the claimer with the handler first,
        # then to one that runs anything.
        notifier.fire((), {("org", "", "b"): 1})
        assert woken(subs) == [0]
        notifier.fire((), {("org", "", "b"): 2})
        assert woken(subs) == [0, 1]


def test_a_claimer_without_free_slots_is_passed_over(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), ())
        notifier.set_accepting(subs[0], False)
        for _ in range(3):
            notifier.fire((), {("org", "", "c"): 1})
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
        notifier.fire((), {("org", "", "c"): 1})
        assert present.wait(0)
    assert not gone.wait(0)


def test_a_delayed_retry_wakes_one_claimer_when_due(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), ())
        notifier.fire_at(time.monotonic() + 0.05, ("org", "", "c"))
        assert woken(subs) == []
        assert subs[0].wait(5.0) or subs[1].wait(5.0)
        assert woken(subs) == []


def test_wake_all_reaches_claimers_and_topic_subscribers(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as claimer, notifier.subscribe("t") as follower:
        notifier.wake_all()
        assert claimer.wait(0) and follower.wait(0)


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[Notifier, Notifier]]:
    """Two notifiers bridged over one PostgreSQL database, as two replicas' are;
    the second already hears what the first fires."""
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share wake-ups only through PostgreSQL")
    with ExitStack() as stack:
        pair = (Notifier(), Notifier())
        for notifier in pair:
            stack.callback(notifier.close)
            bridge = PgBridge(notifier, database_url)
            bridge.start()
            stack.callback(bridge.stop)
        sender, listener = pair
        # The listener connects on a thread of its own: fire until it hears one.
        with listener.subscribe("listening") as probe:
            wait_until(lambda: sender.fire(["listening"]) or probe.wait(0.05), DELIVERY)
        yield pair


def settled(sender: Notifier, listener: Notifier) -> None:
    """Returns once everything ``sender`` fired before has reached ``listener``
    (one channel delivers in order)."""
    with listener.subscribe("fence") as fence:
        sender.fire(["fence"])
        assert fence.wait(DELIVERY)


def test_topics_and_ready_work_reach_the_other_replica(
    replicas: tuple[Notifier, Notifier],
) -> None:
    sender, listener = replicas
    with ExitStack() as stack:
        run = stack.enter_context(listener.subscribe("run:1"))
        logs = stack.enter_context(listener.subscribe("logs:7"))
        bystander = stack.enter_context(listener.subscribe("run:2"))
        gpu = stack.enter_context(listener.subscribe(work=("org", ("gpu", "linux"))))
        elsewhere = stack.enter_context(listener.subscribe(work=("o2", ())))
        sender.fire(["run:1", "logs:7"], {("org", "gpu,linux", "c"): 3, ("o2", "", "c"): 1})
        assert run.wait(DELIVERY) and logs.wait(DELIVERY)
        assert gpu.wait(DELIVERY) and elsewhere.wait(DELIVERY)
        assert listener.take_work(gpu) == {("org", "gpu,linux", "c"): 3}
        assert listener.take_work(elsewhere) == {("o2", "", "c"): 1}
        settled(sender, listener)
        assert not bystander.wait(0)


def test_a_shell_script_travels_as_work_for_claimers_that_run_anything(
    replicas: tuple[Notifier, Notifier],
) -> None:
    # A shell script is no handler's name: it travels as the empty command,
    # which only claimers that run anything take.
    sender, listener = replicas
    script = "echo " + "x" * 300
    with ExitStack() as stack:
        handler = stack.enter_context(
            listener.subscribe(work=("org", ()), commands=frozenset({"echo"}))
        )
        anything = stack.enter_context(listener.subscribe(work=("org", ())))
        sender.fire((), {("org", "", script): 2, ("org", "", "y" * 301): 1})
        assert anything.wait(DELIVERY)
        assert listener.take_work(anything) == {("org", "", ""): 3}
        settled(sender, listener)
        assert not handler.wait(0)


def test_wake_ups_too_large_to_send_wake_everyone_on_the_other_replica(
    replicas: tuple[Notifier, Notifier],
) -> None:
    sender, listener = replicas
    with ExitStack() as stack:
        unrelated = stack.enter_context(listener.subscribe("run:unrelated"))
        claimer = stack.enter_context(listener.subscribe(work=("org", ())))
        sender.fire([f"logs:{i}" for i in range(2000)])
        assert unrelated.wait(DELIVERY) and claimer.wait(DELIVERY)


def test_each_woken_claimer_holds_its_share_of_the_work(notifier: Notifier) -> None:
    with ExitStack() as stack:
        subs = claimers(stack, notifier, (), ())
        notifier.fire((), {("org", "", "c"): 5})
        shares = sorted(notifier.take_work(sub).get(("org", "", "c"), 0) for sub in subs)
        assert shares == [2, 3]
        assert notifier.take_work(subs[0]) == {}


def test_work_given_to_a_claimer_that_filled_up_goes_to_another(notifier: Notifier) -> None:
    with ExitStack() as stack:
        busy, idle = claimers(stack, notifier, (), ())
        notifier.fire((), {("org", "", "c"): 1})
        assert woken([busy, idle]) == [0]
        work = notifier.take_work(busy)
        notifier.decline(busy, work)  # its claim filled its last slot with other jobs
        assert woken([busy, idle]) == [1]
        assert notifier.take_work(idle) == {("org", "", "c"): 1}


def test_work_given_to_a_claimer_that_leaves_goes_to_another(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as staying:
        with notifier.subscribe(work=("org", ())) as leaving:
            notifier.fire((), {("org", "", "c"): 1})
            assert woken([staying, leaving]) == [0]
            notifier.fire((), {("org", "", "c"): 1})
            assert woken([staying, leaving]) == [1]
        assert staying.wait(0)
        assert notifier.take_work(staying) == {("org", "", "c"): 2}


def test_passed_on_work_with_no_taker_is_dropped_for_the_poll(notifier: Notifier) -> None:
    with notifier.subscribe(work=("org", ())) as only:
        notifier.fire((), {("org", "", "c"): 1})
        work = notifier.take_work(only)
        notifier.decline(only, work)
        assert only.wait(0)  # the first fire's wake-up, nothing more
        assert not only.wait(0)
        assert notifier.take_work(only) == {}
