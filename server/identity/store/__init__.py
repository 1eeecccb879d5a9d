"""The identity store: organizations, users, signing keys, sessions, credentials,
OAuth clients and codes, policies and the audit log, over SQLAlchemy Core.

Every function runs inside a transaction its caller opened (``db.write()`` or
``db.read()``) and takes that ``Connection``; nothing here commits. Times are
epoch milliseconds from the database clock (``db.now_ms(conn)``), passed in as
``now_ms`` so that the caller decides what "now" is once per transaction.

Rules that hold throughout:

* Org isolation. A function that takes ``org_id`` only ever reads or changes
  rows of that org; an id of another org behaves exactly like an unknown id.
  The few lookups without ``org_id`` resolve a presented credential (a token
  digest, a client id, a refresh token): the credential decides the org, and
  the record returned says which one it is.
* Secrets never come back. Tokens are stored as digests
  (``secrets_.digest_of``); no record returned here carries a digest, so a
  listing cannot leak one. Callers mint tokens, keep the plaintext for the one
  answer that shows it, and hand the store the digest and hint.
* Lookups by credential return only usable credentials (not revoked, not
  expired, not disabled), so an authenticator cannot forget to check.
* Uniqueness violations raise :class:`Conflict`, inside a savepoint, so the
  caller's transaction stays usable (e.g. to write an audit event).
* Values longer than their column raise ``InvalidArgument`` on both backends
  (SQLite would silently store them, PostgreSQL fail with a driver error);
  audit fields are truncated instead, since an audit write must not fail.

The package has one module per area (``orgs``, ``users``, ``signing_keys``,
``sessions``, ``pats``, ``machine_users``, ``oauth``, ``policies``, ``audit``)
over the shared plumbing in ``_common``; import from the package, not from the
modules.
"""

from __future__ import annotations

from trellis.server.core.audit import AuditEvent, AuditResult, append_audit, list_audit
from trellis.server.identity.store._common import DEFAULT_LIMIT, MAX_LIMIT, Conflict, Page
from trellis.server.identity.store.machine_users import (
    MachineBackend,
    MachineUser,
    create_machine_user,
    get_machine_user,
    get_machine_user_by_digest,
    get_machine_user_by_username,
    list_backends,
    list_machine_users,
    register_backend,
    set_machine_user_enabled,
)
from trellis.server.identity.store.oauth import (
    CodeRedemption,
    OAuthClient,
    OAuthCode,
    authenticate_oauth_client,
    consume_oauth_code,
    create_oauth_client,
    create_oauth_code,
    find_oauth_client,
    get_oauth_client,
    list_oauth_clients,
    revoke_oauth_client,
    update_oauth_client,
)
from trellis.server.identity.store.orgs import (
    Organization,
    OrgStatus,
    create_org,
    get_org,
    list_orgs,
    list_orgs_after,
    set_org_status,
    update_org,
)
from trellis.server.identity.store.pats import (
    TOUCH_INTERVAL_MS,
    Pat,
    create_pat,
    get_pat,
    get_pat_by_digest,
    list_pats,
    revoke_pat,
    touch_pat,
)
from trellis.server.identity.store.policies import (
    PolicyRule,
    StoredPolicy,
    create_policy,
    delete_policy,
    get_policy,
    list_policies,
    update_policy,
)
from trellis.server.identity.store.sessions import (
    PurgeCounts,
    RefreshRotation,
    Session,
    claim_jti,
    create_session,
    get_session,
    is_jti_revoked,
    purge_expired,
    purge_revoked_jtis,
    revoke_jti,
    revoke_session,
    revoke_user_sessions,
    rotate_refresh,
)
from trellis.server.identity.store.signing_keys import (
    delete_signing_key,
    load_signing_keys,
    save_signing_key,
    save_signing_keys,
)
from trellis.server.identity.store.users import (
    User,
    create_user,
    delete_user,
    get_user,
    get_user_by_username,
    list_users,
    list_users_after,
    record_login,
    record_totp_step,
    restore_user,
    set_password,
    set_totp_secret,
    update_user,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "TOUCH_INTERVAL_MS",
    "AuditEvent",
    "AuditResult",
    "CodeRedemption",
    "Conflict",
    "MachineBackend",
    "MachineUser",
    "OAuthClient",
    "OAuthCode",
    "OrgStatus",
    "Organization",
    "Page",
    "Pat",
    "PolicyRule",
    "PurgeCounts",
    "RefreshRotation",
    "Session",
    "StoredPolicy",
    "User",
    "append_audit",
    "authenticate_oauth_client",
    "claim_jti",
    "consume_oauth_code",
    "create_machine_user",
    "create_oauth_client",
    "create_oauth_code",
    "create_org",
    "create_pat",
    "create_policy",
    "create_session",
    "create_user",
    "delete_policy",
    "delete_signing_key",
    "delete_user",
    "find_oauth_client",
    "get_machine_user",
    "get_machine_user_by_digest",
    "get_machine_user_by_username",
    "get_oauth_client",
    "get_org",
    "get_pat",
    "get_pat_by_digest",
    "get_policy",
    "get_session",
    "get_user",
    "get_user_by_username",
    "is_jti_revoked",
    "list_audit",
    "list_backends",
    "list_machine_users",
    "list_oauth_clients",
    "list_orgs",
    "list_orgs_after",
    "list_pats",
    "list_policies",
    "list_users",
    "list_users_after",
    "load_signing_keys",
    "purge_expired",
    "purge_revoked_jtis",
    "record_login",
    "record_totp_step",
    "register_backend",
    "restore_user",
    "revoke_jti",
    "revoke_oauth_client",
    "revoke_pat",
    "revoke_session",
    "revoke_user_sessions",
    "rotate_refresh",
    "save_signing_key",
    "save_signing_keys",
    "set_machine_user_enabled",
    "set_org_status",
    "set_password",
    "set_totp_secret",
    "touch_pat",
    "update_oauth_client",
    "update_org",
    "update_policy",
    "update_user",
]
