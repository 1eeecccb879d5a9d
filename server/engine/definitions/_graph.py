"""The dependency graph of a workflow: every edge known, no job depending on itself, no cycle."""

from __future__ import annotations

from collections.abc import Sequence

from trellis.server.engine.definitions._errors import Where, quote
from trellis.server.engine.definitions._model import JobDef

# Longer cycles are abbreviated so that one bad edge in a huge graph gives a readable message.
_CYCLE_SHOWN = 12


def check_graph(jobs: Sequence[JobDef], verb: str, where: Where) -> None:
    """Reject unknown, self and repeated dependencies, then cycles; O(jobs + edges)."""
    index = {job.id: i for i, job in enumerate(jobs)}
    for job in jobs:
        at = where.job(job.id)
        seen: set[str] = set()
        for parent in job.depends_on:
            if parent == job.id:
                at.fail(f"{verb} itself")
            if parent not in index:
                at.fail(f"{verb} unknown job {quote(parent)}")
            if parent in seen:
                at.fail(f"{verb} {quote(parent)} more than once")
            seen.add(parent)

    # Kahn's algorithm: no recursion, so a 20,000-job chain is no deeper than a short one.
    waiting = [len(job.depends_on) for job in jobs]
    kids: list[list[int]] = [[] for _ in jobs]
    for i, job in enumerate(jobs):
        for parent in job.depends_on:
            kids[index[parent]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        node = ready.pop()
        done += 1
        for kid in kids[node]:
            waiting[kid] -= 1
            if waiting[kid] == 0:
                ready.append(kid)
    if done == len(jobs):
        return

    # Every job left over still waits on another left-over job, so following such parents
    # from any of them must come back round: that walk is the cycle.
    node = next(i for i, count in enumerate(waiting) if count > 0)
    position: dict[int, int] = {}
    path: list[int] = []
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(index[p] for p in jobs[node].depends_on if waiting[index[p]] > 0)
    cycle = path[position[node] :]
    first = cycle.index(min(cycle))  # start at the job defined first, for a stable message
    cycle = cycle[first:] + cycle[:first]
    names = [jobs[i].id for i in cycle]
    if len(names) > _CYCLE_SHOWN:
        hidden = len(names) - _CYCLE_SHOWN + 2
        names = [*names[: _CYCLE_SHOWN - 2], f"... {hidden} more ...", *names[-2:]]
    where.fail(f"cycle: {' -> '.join([*names, jobs[cycle[0]].id])}")
