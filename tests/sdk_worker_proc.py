"""A worker process for the SDK end-to-end tests (not a test module).

    python tests/sdk_worker_proc.py TARGET [LEASE_TTL_SECS]

Runs a ``Worker`` whose ``block`` handler prints ``started <job_id> <lease_id>
<attempt>`` on the process's stdout (``sys.__stdout__``: a handler's
``sys.stdout`` is its job's log). On a job's first attempt it then blocks
until the job is asked to stop (or a minute passes) and prints ``stopped
<job_id> <reason>``, so a test can kill or pause the process while it holds
the job's lease; later attempts succeed at once.
"""

from __future__ import annotations

import sys

from trellis.worker_sdk import JobContext, Worker


def main(argv: list[str]) -> int:
    target = argv[1]
    ttl = int(argv[2]) if len(argv) > 2 else 2
    worker = Worker(target, lease_ttl_secs=ttl, slots=1)
    out = sys.__stdout__

    @worker.handler("block")
    def block(ctx: JobContext) -> dict[str, str]:
        print(f"started {ctx.job_id} {ctx.lease_id} {ctx.attempt}", file=out, flush=True)
        if ctx.attempt > 0:
            return {"by": "worker-process"}
        ctx.cancelled.wait(60.0)
        reason = ctx.stop_reason.value if ctx.stop_reason else "not stopped"
        print(f"stopped {ctx.job_id} {reason}", file=out, flush=True)
        ctx.raise_if_cancelled()
        return {"by": "killed-worker"}

    print(f"worker {worker.worker_id}", flush=True)
    worker.run(drain_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
