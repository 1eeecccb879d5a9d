"""Server configuration: environment variables, mirrored by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trellis.server.identity.ratelimit import Limit, parse_limit

DEFAULT_DATABASE_URL = "sqlite:///data/trellis.db"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _auth_enabled(value: str | None) -> bool:
    text = (value or "on").strip().lower()
    if text in {"0", "false", "no", "off"}:
        return False
    if text in {"1", "true", "yes", "on"}:
        return True
    raise ValueError(f"TRELLIS_AUTH={value!r}: use on or off")


def whole_number(text: str) -> int:
    """A count given as text (an environment variable or a flag)."""
    if not text.isdigit():
        raise ValueError(f"{text!r}: use a whole number, 0 or more")
    return int(text)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    try:
        return whole_number(text) if text else default
    except ValueError as exc:
        raise ValueError(f"{name}={exc}") from None


def days(text: str) -> float:
    """A number of days given as text (fractions allowed; 0: none)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"{text!r}: use a number of days, 0 or more (0: forever)")
    return value


def _days(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    try:
        return days(text) if text else default
    except ValueError as exc:
        raise ValueError(f"{name}={exc}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{name}={text!r}: a number of seconds greater than 0, e.g. 2.5")
    return value


def _allow_list(text: str) -> str:
    """``EGRESS_ALLOW`` as given, once every entry is known to be a host or a range."""
    from trellis.server.events._egress import parse_allow_list

    parse_allow_list(text)
    return text


def _mib(name: str, value: str | None) -> int | None:
    """A size given in MiB (fractions allowed), as bytes; None when unset."""
    if value is None or not value.strip():
        return None
    try:
        mib = float(value)
    except ValueError:
        mib = 0.0
    if not mib > 0 or mib == float("inf"):
        raise ValueError(f"{name}={value!r}: a size in MiB greater than 0, e.g. 16")
    return max(1, int(mib * 1024 * 1024))


def _rate_limits(env: Mapping[str, str]) -> dict[str, Limit]:
    """``TRELLIS_RATE_LIMIT_<BUCKET>=<requests>/<window>`` overrides, e.g.
    ``TRELLIS_RATE_LIMIT_GENERAL=1000/min``."""
    prefix = "TRELLIS_RATE_LIMIT_"
    return {
        key[len(prefix) :].lower(): parse_limit(value)
        for key, value in env.items()
        if key.startswith(prefix) and value.strip()
    }


@dataclass(frozen=True)
class Config:
    """Everything ``trellis serve`` needs; see the README's configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "0.0.0.0"
    port: int = 3000
    grpc_port: int = 50051
    workflows_dir: Path | None = Path("workflows")
    api_only: bool = False
    cors_origins: tuple[str, ...] | None = None
    reap_interval_secs: float = 5.0
    # How often each replica looks for due schedule fires, and what becomes
    # of fires missed while no replica ran ("latest": one run; "skip": none).
    schedule_interval_secs: float = 1.0
    schedule_catch_up: str = "latest"
    # Lost leases (workers that stopped heartbeating) a job is queued again
    # after, without spending its retries; one more fails it.
    max_lost_leases: int = 3
    rest_enabled: bool = True
    rest_threads: int = 64
    # Idle time after which an SSE log stream sends a keep-alive comment.
    sse_keepalive_secs: float = 15.0
    # Open SSE log streams at most (each holds one of the REST threads).
    max_sse_streams: int = 24
    # The /ws WebSocket: open sockets per organization on this replica (0: no
    # limit), seconds between pings (and to wait for a pong), events queued for
    # a slow client before its socket closes, and the longest one send may take.
    ws_max_per_org: int = 32
    ws_ping_interval_secs: float = 20.0
    ws_queue_events: int = 256
    ws_send_timeout_secs: float = 10.0
    grpc_threads: int = 512
    poll_interval_secs: float = 2.0
    org_id: str = "default"
    # Off only on a loopback HOST (development); see TrellisServer.start.
    auth_enabled: bool = True
    # The first administrator, created when the default organization has no
    # user yet; without a password one is generated and printed once.
    admin_username: str = "admin"
    admin_password: str | None = None
    # The `iss` and `aud` of access tokens.
    token_issuer: str = "trellis"
    access_token_ttl_secs: int = 900
    # Access tokens are signed with a new key once the active one is this old;
    # the previous key keeps verifying until its tokens have expired.
    signing_key_max_age_days: float = 30.0
    rate_limits: dict[str, Limit] = field(default_factory=dict)
    # Where clients reach the REST port, for the OAuth2 discovery document;
    # default http://localhost:<PORT>.
    public_url_override: str = ""
    # On SQLite, the size the write-ahead log is kept under; None: the
    # default of trellis.server.core.db (kept out of here: it imports SQLAlchemy).
    sqlite_wal_limit_bytes: int | None = None
    # Events older than this are pruned from the event log (0: kept
    # forever), checked every event_prune_interval_secs by the reaper.
    event_retention_days: float = 30.0
    event_prune_interval_secs: float = 60.0
    # Outgoing requests (webhooks, backend callbacks): host names and CIDR
    # ranges allowed although they are loopback, private, link-local...
    egress_allow: str = ""
    # A TOML file with a [webhooks] section, loaded into the default org at start.
    webhooks_config: Path | None = None
    webhook_retry_base_ms: int = 1000
    webhook_retry_cap_ms: int = 300_000
    webhook_max_age_secs: float = 86_400.0
    webhook_timeout_secs: float = 5.0
    webhook_lease_secs: float = 30.0

    @property
    def public_url(self) -> str:
        return self.public_url_override or f"http://localhost:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        cors = env.get("CORS_ORIGINS")
        wf_dir = env.get("WORKFLOWS_DIR", "workflows")
        return cls(
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            host=env.get("HOST", "0.0.0.0"),
            port=int(env.get("PORT", "3000")),
            grpc_port=int(env.get("GRPC_PORT", "50051")),
            workflows_dir=Path(wf_dir) if wf_dir else None,
            api_only=_flag(env.get("API_ONLY")),
            cors_origins=tuple(o.strip() for o in cors.split(",") if o.strip()) if cors else None,
            reap_interval_secs=float(env.get("REAP_INTERVAL_SECS", "5")),
            schedule_interval_secs=float(env.get("SCHEDULE_INTERVAL_SECS", "1")),
            schedule_catch_up=env.get("SCHEDULE_CATCH_UP", "latest"),
            max_lost_leases=_count(env, "TRELLIS_MAX_LOST_LEASES", 3),
            rest_threads=int(env.get("REST_THREADS", "64")),
            ws_max_per_org=_count(env, "TRELLIS_WS_MAX_PER_ORG", 32),
            ws_ping_interval_secs=float(env.get("TRELLIS_WS_PING_INTERVAL_SECS", "20")),
            grpc_threads=int(env.get("GRPC_THREADS", "512")),
            auth_enabled=_auth_enabled(env.get("TRELLIS_AUTH")),
            admin_username=env.get("TRELLIS_ADMIN_USERNAME") or "admin",
            admin_password=env.get("TRELLIS_ADMIN_PASSWORD") or None,
            token_issuer=env.get("TRELLIS_TOKEN_ISSUER") or "trellis",
            access_token_ttl_secs=int(env.get("TRELLIS_ACCESS_TOKEN_TTL_SECS", "900")),
            signing_key_max_age_days=float(env.get("TRELLIS_SIGNING_KEY_MAX_AGE_DAYS", "30")),
            rate_limits=_rate_limits(env),
            public_url_override=env.get("TRELLIS_PUBLIC_URL", ""),
            sqlite_wal_limit_bytes=_mib(
                "TRELLIS_SQLITE_WAL_LIMIT_MIB", env.get("TRELLIS_SQLITE_WAL_LIMIT_MIB")
            ),
            event_retention_days=_days(env, "EVENT_RETENTION_DAYS", 30.0),
            event_prune_interval_secs=float(env.get("EVENT_PRUNE_INTERVAL_SECS", "60")),
            egress_allow=_allow_list(env.get("EGRESS_ALLOW", "")),
            webhooks_config=Path(env["WEBHOOKS_CONFIG"]) if env.get("WEBHOOKS_CONFIG") else None,
            webhook_retry_base_ms=_count(env, "WEBHOOK_RETRY_BASE_MS", 1000),
            webhook_retry_cap_ms=_count(env, "WEBHOOK_RETRY_CAP_MS", 300_000),
            webhook_max_age_secs=_seconds(env, "WEBHOOK_MAX_AGE_SECS", 86_400.0),
            webhook_timeout_secs=_seconds(env, "WEBHOOK_TIMEOUT_SECS", 5.0),
            webhook_lease_secs=_seconds(env, "WEBHOOK_LEASE_SECS", 30.0),
        )
