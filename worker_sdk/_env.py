"""Which of the worker's environment variables a shell job inherits, and which
values are secrets to mask in job logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_log = logging.getLogger("trellis.worker_sdk")

# What a command needs to behave as it would in a login shell; nothing here
# carries a credential.
BASE_ENV = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR"}
)
BASE_PREFIXES = ("LC_",)
# The credentials the SDK and the `trellis` command read from the environment.
CREDENTIAL_ENV = frozenset({"TRELLIS_TOKEN", "TRELLIS_PASSWORD", "TRELLIS_ADMIN_PASSWORD"})
# Every token a Trellis server issues (personal access, machine user, OAuth)
# starts like this.
_TRELLIS_TOKEN = re.compile(r"trl_[a-z]+_[0-9A-Za-z]")

PASS_ENV_VAR = "TRELLIS_WORKER_PASS_ENV"
SECRET_ENV_VAR = "TRELLIS_WORKER_SECRET_ENV"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?|\*")


def names_from_env(environ: Mapping[str, str], variable: str) -> list[str]:
    """The comma-separated names in ``environ[variable]`` (none when unset)."""
    return [name.strip() for name in environ.get(variable, "").split(",") if name.strip()]


def _checked(names: Sequence[str], option: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{option} must be a sequence of names, not one string")
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"{option}: {name!r} is not a variable name "
                "(letters, digits and _, or a prefix ending in *)"
            )
    return tuple(names)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


@dataclass(frozen=True)
class JobEnvPolicy:
    """What jobs inherit from the worker, decided once when the worker is made."""

    inherited: dict[str, str]
    """The worker's variables every shell job starts from."""
    secrets: tuple[str, ...]
    """Values to mask in job logs, outputs and errors: the worker's token, the
    credentials in its environment and the values of variables marked secret."""


def job_env_policy(
    environ: Mapping[str, str],
    *,
    pass_env: Sequence[str],
    secret_env: Sequence[str],
    token: str | None,
) -> JobEnvPolicy:
    """Picks from ``environ`` the base variables and those ``pass_env`` names
    (``NAME`` or ``PREFIX*``), leaving out credentials and whatever
    ``secret_env`` names.

    Raises ValueError when ``pass_env`` names a credential or a variable also
    marked secret: that configuration cannot do what it says.
    """
    passed = _checked(pass_env, "pass_env")
    secret = _checked(secret_env, "secret_env")
    for name in passed:
        if name in CREDENTIAL_ENV:
            raise ValueError(f"pass_env: {name} is a Trellis credential; jobs never get it")
        if not name.endswith("*") and _matches(name, secret):
            raise ValueError(f"pass_env: {name} is also marked secret; jobs never get it")

    def withheld(name: str, value: str) -> bool:
        return (
            name in CREDENTIAL_ENV
            or (bool(token) and value == token)
            or _TRELLIS_TOKEN.match(value) is not None
            or _matches(name, secret)
        )

    inherited: dict[str, str] = {}
    secrets = [token] if token else []
    for name, value in environ.items():
        if withheld(name, value):
            secrets.append(value)
            if name in passed:
                _log.warning("not passing %s to jobs: its value is a Trellis credential", name)
        elif name in BASE_ENV or name.startswith(BASE_PREFIXES) or _matches(name, passed):
            inherited[name] = value
    return JobEnvPolicy(inherited, tuple(secrets))
