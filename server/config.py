"""Server configuration: environment variables, mirrored by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///data/trellis.db"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


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
    rest_enabled: bool = True
    rest_threads: int = 64
    # Idle time after which an SSE log stream sends a keep-alive comment.
    sse_keepalive_secs: float = 15.0
    # Open SSE log streams at most (each holds one of the REST threads).
    max_sse_streams: int = 24
    grpc_threads: int = 512
    poll_interval_secs: float = 2.0
    org_id: str = "default"

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
            rest_threads=int(env.get("REST_THREADS", "64")),
            grpc_threads=int(env.get("GRPC_THREADS", "512")),
        )
