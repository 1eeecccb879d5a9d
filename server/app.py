"""Wires the database, the service, the gRPC server, the REST bridge and the
reaper into one process: what ``trellis serve`` runs."""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trellis.server.api import _engine
from trellis.server.api import webhooks as webhooks_api
from trellis.server.api._auth import AuthInterceptor, method_access
from trellis.server.api._identity import add_identity_services
from trellis.server.api._local_channel import HandlerRegistry, LocalChannel
from trellis.server.api._wire import WireInterceptor
from trellis.server.api.events import event_log_of
from trellis.server.config import Config
from trellis.server.core.db import Database, connect, upgrade_schema
from trellis.server.core.eventlog import topic_events
from trellis.server.core.principal import Principal
from trellis.server.engine import CATCH_UP_POLICIES, CatchUp, Notifier, PgBridge, Scheduler, Service
from trellis.server.events import (
    Deliverer,
    DeliverySettings,
    EgressPolicy,
    GuardedClient,
    LogSource,
    Webhooks,
    prune,
)
from trellis.server.identity import Identity
from trellis.server.identity.principal import AuthError
from trellis.server.identity.ratelimit import Limiter, RateLimiter
from trellis.server.identity.shared_limits import SharedRateLimiter

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# How many ports after PORT are tried when it is taken.
PORT_SEARCH = 20
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# How often a replica that reaps also checks the age of the signing key.
KEY_CHECK_SECS = 3600.0


class TrellisServer:
    """One Trellis replica. ``start()`` returns once both ports are bound."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # Refused before anything starts.
        self._catch_up = _catch_up(config.schedule_catch_up)
        self.db: Database = connect(
            config.database_url,
            background_checkpoints=True,
            wal_limit_bytes=config.sqlite_wal_limit_bytes,
        )
        self.notifier = Notifier()
        self.service = Service(
            self.db,
            self.notifier,
            poll_interval=config.poll_interval_secs,
            max_lost_leases=config.max_lost_leases,
        )
        self.identity = Identity(
            self.db,
            issuer=config.token_issuer,
            audience=config.token_issuer,
            access_ttl_secs=config.access_token_ttl_secs,
        )
        # Replicas on one PostgreSQL share their meters; a SQLite file has one process.
        self.limiter: Limiter = (
            SharedRateLimiter(self.db, config.rate_limits)
            if self.db.is_postgres
            else RateLimiter(config.rate_limits)
        )
        self._log_source = LogSource(event_log_of(self.service))
        self.webhooks = Webhooks(self.db, self._log_source)
        self._deliverer: Deliverer | None = None
        self._bridge: PgBridge | None = None
        self._grpc: grpc.Server | None = None
        self._handlers: HandlerRegistry | None = None
        self._interceptors: list[grpc.ServerInterceptor] = []
        self._health = health.HealthServicer()
        self._rest: object | None = None
        self._channel: grpc.Channel | None = None
        self._stop = threading.Event()
        self._background = contextlib.ExitStack()
        self._reaper: threading.Thread | None = None
        self._scheduler: Scheduler | None = None
        self._services: list[str] = []
        self.grpc_port = 0
        self.rest_port = 0

    def start(self) -> None:
        if not self.config.auth_enabled and self.config.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"TRELLIS_AUTH=off serves every caller as an administrator; it is refused "
                f"on HOST={self.config.host} (only 127.0.0.1, ::1 or localhost)"
            )
        upgrade_schema(self.db)
        self.service.start()
        self._bootstrap_identity()
        self._background.enter_context(self.db.background_checkpoints())
        if self.db.is_postgres:
            url = self.db.engine.url.set(drivername="postgresql")
            self._bridge = PgBridge(self.notifier, url.render_as_string(hide_password=False))
            self._bridge.start()
        if self.config.workflows_dir is not None and self.config.workflows_dir.is_dir():
            self.service.load_workflows(self.config.org_id, self.config.workflows_dir)
        if self.config.webhooks_config is not None:
            self.webhooks.load_config(self.config.org_id, self.config.webhooks_config)
        self._start_grpc()
        if self.config.rest_enabled:
            self._start_rest()
        for name in self._services:
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if not self.config.api_only:
            self._reaper = threading.Thread(
                target=self._reap_loop, name="trellis-reaper", daemon=True
            )
            self._reaper.start()
            self._scheduler = Scheduler(
                self.service,
                interval_secs=self.config.schedule_interval_secs,
                catch_up=self._catch_up,
            )
            self._scheduler.start()
            self._start_deliverer()
        log.info(
            "trellis serving gRPC on :%d, REST on :%s (%s)",
            self.grpc_port,
            self.rest_port or "-",
            "PostgreSQL" if self.db.is_postgres else "SQLite",
        )

    def _start_deliverer(self) -> None:
        """Webhooks and backend callbacks, woken by the events this replica
        (or, through the PostgreSQL bridge, another) commits."""
        c = self.config
        client = GuardedClient(
            EgressPolicy.from_allow_list(c.egress_allow), timeout_secs=c.webhook_timeout_secs
        )
        settings = DeliverySettings(
            retry_base_ms=c.webhook_retry_base_ms,
            retry_cap_ms=max(c.webhook_retry_cap_ms, c.webhook_retry_base_ms),
            max_age_secs=c.webhook_max_age_secs,
            lease_secs=c.webhook_lease_secs,
            poll_secs=c.poll_interval_secs,
        )
        self._deliverer = Deliverer(
            self.db,
            self._log_source,
            client,
            settings,
            wakeups=self.notifier,
            topic=topic_events,
        )
        self._deliverer.start()

    def _bootstrap_identity(self) -> None:
        """The default organization, a current signing key and the first administrator."""
        generated = self.identity.bootstrap(
            self.config.admin_username,
            self.config.admin_password,
            max_key_age_secs=self.config.signing_key_max_age_days * 86_400,
        )
        if generated is not None:
            # Shown once, on the console of the first start (never stored).
            print(
                f"trellis: created the administrator {self.config.admin_username!r} with "
                f"password {generated!r} (shown once; set TRELLIS_ADMIN_PASSWORD to choose it)",
                flush=True,
            )
        if not self.config.auth_enabled:
            log.warning(
                "AUTH IS OFF (TRELLIS_AUTH=off): every caller on %s acts as an administrator "
                "of any organization. For development on this machine only.",
                self.config.host,
            )

    def _run_policy(self, principal: Principal, workflow_id: str) -> str:
        """What the organization's policies say to ``principal`` running the
        workflow (the refusal, or ""), as the interceptor judges RunWorkflow."""
        try:
            self.identity.check_policy(principal, f"workflows:{workflow_id}", "run")
        except AuthError as exc:
            return str(exc)
        return ""

    def _start_grpc(self) -> None:
        enabled = self.config.auth_enabled
        auth = AuthInterceptor(
            method_access(_engine.PROTO_FILES),
            self.identity.authenticate if enabled else None,
            self.limiter,
            check_policy=self.identity.check_policy if enabled else None,
        )
        if enabled:
            self.service.run_policy = self._run_policy
        # The call interceptor first: requests that do not decode never reach auth.
        self._interceptors = [WireInterceptor(), auth]
        network = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.config.grpc_threads, thread_name_prefix="trellis-grpc"
            ),
            maximum_concurrent_rpcs=self.config.grpc_threads,
            interceptors=self._interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        # The handlers are recorded as they are added, for the REST bridge's
        # in-process channel.
        server = self._handlers = HandlerRegistry(network)
        names = _engine.add_services(server, self.service)
        add_identity_services(server, self.identity, self.config.public_url)
        webhooks_api.add_to(server, self.webhooks)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        # SERVING only once REST is up too (see start), so a probe that sees
        # SERVING can use both ports.
        self._services = ["", *names]
        for name in self._services:
            self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.grpc_port = server.add_insecure_port(f"{self.config.host}:{self.config.grpc_port}")
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC port {self.config.grpc_port}")
        server.start()
        self._grpc = network

    def _start_rest(self) -> None:
        from trellis.rest_bridge import RestServer, WebSocketSettings, create_app

        network = grpc.insecure_channel(
            f"127.0.0.1:{self.grpc_port}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        assert self._handlers is not None, "gRPC starts first"
        # Unary calls run in the REST thread, through the same interceptors
        # and handlers as calls from the network (see _local_channel).
        self._channel = LocalChannel(self._handlers, self._interceptors, network)
        app = create_app(
            self._channel,
            cors_origins=self.config.cors_origins,
            sse_keepalive_secs=self.config.sse_keepalive_secs,
            max_sse_streams=self.config.max_sse_streams,
            websockets=WebSocketSettings(
                ping_interval_secs=self.config.ws_ping_interval_secs,
                ping_timeout_secs=self.config.ws_ping_interval_secs,
                max_per_org=self.config.ws_max_per_org,
                queue_events=self.config.ws_queue_events,
                send_timeout_secs=self.config.ws_send_timeout_secs,
            ),
        )
        # As documented for PORT: a taken port moves on to the next free one.
        port = self.config.port
        for attempt in range(PORT_SEARCH):
            rest = RestServer(
                app, host=self.config.host, port=port, threads=self.config.rest_threads
            )
            try:
                rest.start()
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port == 0 or attempt == PORT_SEARCH - 1:
                    raise
                log.warning("REST port %d is taken; trying %d", port, port + 1)
                port += 1
        self.rest_port = rest.port
        self._rest = rest

    def _reap_loop(self) -> None:
        """Reaps expired leases as they expire: between passes it sleeps until
        the earliest lease expiry, never longer than REAP_INTERVAL_SECS."""
        keys_checked = time.monotonic()
        # The first pass prunes at once: a replica that restarts often still prunes.
        pruned = -float("inf")
        interval = self.config.reap_interval_secs
        while not self._stop.is_set():
            try:
                self.service.wait_for_expiry(interval)
                if self._stop.is_set():
                    return
                n = self.service.reap()
                if n:
                    log.info("reaper: %d expired lease(s) ended", n)
            except Exception:
                log.exception("reaper pass failed; retrying next interval")
                self._stop.wait(interval)
            if time.monotonic() - pruned >= self.config.event_prune_interval_secs:
                pruned = time.monotonic()
                self._prune_events()
            if time.monotonic() - keys_checked >= KEY_CHECK_SECS:
                keys_checked = time.monotonic()
                self._check_signing_key()

    def _prune_events(self) -> None:
        """Deletes the events older than EVENT_RETENTION_DAYS (a few batches)."""
        try:
            n = prune(self.db, retention_days=self.config.event_retention_days)
            if n:
                log.info("event log: %d event(s) past retention pruned", n)
        except Exception:
            log.exception("event pruning failed; retrying next interval")

    def _check_signing_key(self) -> None:
        """Rotates the token-signing key once it is old (and retires spent ones)."""
        try:
            self.identity.ensure_signing_key(self.config.signing_key_max_age_days * 86_400)
        except Exception:
            log.exception("signing key check failed; retrying in an hour")

    def stop(self, grace: float = 5.0) -> None:
        """Stops taking calls, lets unary calls finish within ``grace`` and
        ends streams cleanly. Leases live in the database: none is lost."""
        self._stop.set()
        for name in self._services:
            self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.close()
        if self._rest is not None:
            self._rest.stop()  # type: ignore[attr-defined]
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._channel is not None:
            self._channel.close()
        if self._reaper is not None:
            self._reaper.join(timeout=grace)
        if self._scheduler is not None:
            self._scheduler.stop(timeout=grace)
        if self._deliverer is not None:
            self._deliverer.stop(timeout=grace)
        if self._bridge is not None:
            self._bridge.stop()
        self.notifier.close()
        self._background.close()
        self.db.dispose()

    def wait(self) -> None:
        """Blocks until ``stop()`` is called."""
        self._stop.wait()


def _catch_up(value: str) -> CatchUp:
    for policy in CATCH_UP_POLICIES:
        if value == policy:
            return policy
    raise ValueError(f"SCHEDULE_CATCH_UP={value!r}: expected one of {', '.join(CATCH_UP_POLICIES)}")
