"""Runs every benchmark and prints one table, the machine at the top.

    python bench/run_all.py [--jobs 5000] [--backend sqlite|postgres|both]
                            [--only throughput|latency|rest|scheduler|runs|events|sustained]
                            [--sustained [SECONDS]] [--json]

The sustained load (SQLite only, 10 minutes by default) runs only when asked
for, with ``--sustained`` or ``--only sustained``.

Everything runs side by side in this one process tree (the server and the
workers are its children), on loopback, so ratios between figures are
meaningful. Progress goes to stderr, the table (or JSON) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import events
import latency
import rest_claim
import runs
import scheduler_cost
import sustained
import throughput
from _common import (
    Backend,
    Figure,
    OtherLoad,
    backends_of,
    exit_on_sigterm,
    log,
    machine_info,
    render_machine,
    render_table,
)

BENCHES: dict[str, Callable[[list[Backend], int], list[Figure]]] = {
    "throughput": lambda backends, jobs: throughput.run(backends, jobs=jobs),
    "latency": lambda backends, _jobs: latency.run(backends),
    "rest": lambda backends, jobs: rest_claim.run(backends, jobs=jobs),
    "scheduler": lambda backends, _jobs: scheduler_cost.run(backends),
    "runs": lambda backends, _jobs: runs.run(backends),
    "events": lambda backends, _jobs: events.run(backends),
}
# Long: only on request (see main).
SUSTAINED = "sustained"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per throughput/REST run")
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--only", choices=[*BENCHES, SUSTAINED], action="append", help="repeatable")
    parser.add_argument(
        "--sustained",
        type=float,
        nargs="?",
        const=sustained.DEFAULT_SECONDS,
        metavar="SECONDS",
        help=f"also the sustained SQLite load (default {sustained.DEFAULT_SECONDS:.0f} s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    backends = backends_of(args.backend)
    chosen = args.only or list(BENCHES)
    if args.sustained is not None and SUSTAINED not in chosen:
        chosen.append(SUSTAINED)
    seconds = sustained.DEFAULT_SECONDS if args.sustained is None else args.sustained
    benches = BENCHES | {
        SUSTAINED: lambda backends, _jobs: (
            sustained.run(seconds=seconds) if "sqlite" in backends else []
        )
    }

    machine = machine_info()
    machine["load average (start)"] = _load()
    started = time.monotonic()
    figures: list[Figure] = []
    failures: list[str] = []
    others: list[str] = []
    for name in chosen:
        t = time.monotonic()
        load = OtherLoad()
        log(f"== {name}")
        try:
            figures.extend(benches[name](backends, args.jobs))
        except Exception as exc:  # report the others all the same
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        others.append(f"{name} {load.cores():.2f}")
        log(f"== {name}: {time.monotonic() - t:.0f} s")
    total = time.monotonic() - started
    machine["load average (end)"] = _load()
    # Cores kept busy by processes outside this tree (and outside PostgreSQL)
    # while each benchmark ran: on a shared machine, a reason for noise.
    machine["other processes (cores)"] = ", ".join(others)
    machine["total time"] = f"{total:.0f} s"

    if args.json:
        out = {
            "machine": machine,
            "figures": [f.as_json() for f in figures],
            "failures": failures,
        }
        print(json.dumps(out, indent=2))
    else:
        print(render_machine(machine))
        print()
        print(render_table(figures))
        for failure in failures:
            print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
