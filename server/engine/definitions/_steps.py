"""A job given as steps, folded into the one command the model holds."""

from __future__ import annotations

import shlex
from typing import Any

from trellis.server.engine.definitions._checks import env, mapping, reject_unknown, required, text
from trellis.server.engine.definitions._errors import Where, quote, show

STEP_KEYS = ("id", "name", "run", "env", "if")
IF_REJECTED = "`if` conditions are not supported; remove it or move the check into the command"


def fold_steps(value: Any, where: Where) -> str:
    """Fold steps into one `sh -c` script that stops at the first failing step.

    Each step runs in its own `sh -c`, so that its variables, `cd` and `exit` stay inside it,
    and its `env` is a `NAME=value` prefix, which the shell applies to that command only.
    """
    if not isinstance(value, list | tuple):
        where.fail(f"`steps` must be a list of steps, got {show(value)}")
    if not value:
        where.fail("`steps` must not be empty")
    lines = ["set -e"]
    seen_ids: set[str] = set()
    for number, raw in enumerate(value, start=1):
        at = where.within(f"step {number}")
        step = mapping(raw, "the step", at)
        reject_unknown(step, STEP_KEYS, at)
        if "if" in step:
            at.fail(IF_REJECTED)
        step_id = None if step.get("id") is None else text(step["id"], "`id`", at)
        if step_id is not None:
            if step_id in seen_ids:
                at.fail(f"step id {quote(step_id)} is used twice")
            seen_ids.add(step_id)
        label = step_id if step.get("name") is None else text(step["name"], "`name`", at)
        run = text(required(step.get("run"), "run", at), "`run`", at)
        step_env = env(step.get("env"), "`env`", at, strings_only=False)

        # The label is only a comment; flattening it keeps a newline from ending the comment.
        title = "" if label is None else ": " + " ".join(label.split())
        lines.append(f"# step {number}{title}")
        assignments = "".join(f"{key}={shlex.quote(val)} " for key, val in step_env.items())
        lines.append(f"{assignments}sh -c {shlex.quote(run)}")
    return "\n".join(lines)
