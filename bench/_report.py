"""The benchmarks' report: figures and their table, percentiles, the machine
description and the load of other processes while a benchmark ran.

Kept apart from ``_common`` (processes, databases, the server) so that either
reads on its own; ``_common`` re-exports every name, as the scripts import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

PG_ADMIN_URL = os.environ.get("TRELLIS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")

# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One measured number, with its target when it has one."""

    bench: str
    backend: str
    name: str
    # None: not measurable against this server (the note says why).
    value: float | None
    unit: str
    # e.g. ">= 2500": the comparison and the bound.
    target: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        if not self.target or self.value is None:
            return ""
        op, bound = self.target.split()
        ok = self.value >= float(bound) if op == ">=" else self.value <= float(bound)
        return "PASS" if ok else "MISS"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict or None
        return out


def fmt_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(figures: Sequence[Figure]) -> str:
    header = ("bench", "backend", "figure", "value", "unit", "target", "", "note")
    rows = [
        (
            f.bench,
            f.backend,
            f.name,
            fmt_value(f.value),
            f.unit,
            f.target,
            f.verdict,
            f.note,
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for n, row in enumerate((header, *rows)):
        cells = [
            cell.rjust(widths[i]) if i == 3 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation."""
    if not values:
        raise ValueError("no values")
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def print_figures(figures: Sequence[Figure], *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"figures": [f.as_json() for f in figures]}, indent=2))
    else:
        print(render_table(figures))


# --------------------------------------------------------------------------- machine


def _pg_version() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def _ram_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    return 0.0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine_info() -> dict[str, str]:
    import google.protobuf
    import sqlalchemy

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": str(cores),
        "cpu": _cpu_model(),
        "ram": f"{_ram_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _pg_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


def render_machine(info: dict[str, str]) -> str:
    width = max(len(k) for k in info)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in info.items())


# --------------------------------------------------------------------------- other load

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, command name, CPU seconds incl. reaped children)."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # utime stime cutime cstime are fields 14-17 (1-based) of the line.
        cpu = sum(int(f) for f in fields[11:15]) / _TICK
        table[int(entry.name)] = (int(fields[1]), name, cpu)
    return table


class OtherLoad:
    """CPU time used meanwhile by processes outside this process tree (and
    outside PostgreSQL, whose backends also work for us): other people's
    work on a shared machine, which the figures cannot account for."""

    def __init__(self) -> None:
        self._start = self._others()
        self._t0 = time.monotonic()

    @staticmethod
    def _others() -> dict[int, float]:
        table = _proc_table()
        ours = {os.getpid()}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _name, _cpu) in table.items():
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        return {
            pid: cpu
            for pid, (_ppid, name, cpu) in table.items()
            if pid not in ours and not name.startswith("postgres")
        }

    def cores(self) -> float:
        """Average number of cores the others kept busy since construction."""
        end = self._others()
        used = sum(max(0.0, cpu - self._start.get(pid, 0.0)) for pid, cpu in end.items())
        return used / max(1e-6, time.monotonic() - self._t0)
