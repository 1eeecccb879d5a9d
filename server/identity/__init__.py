"""The identity service: credentials in, principals out, and the administration of
users, tokens, machine users, organizations, OAuth2 clients and policies.

Pure Python over the identity store (``trellis.server.identity.store``): no gRPC, no
Flask. One :class:`Identity` per process.

One convention throughout: a method acting for a caller takes the caller's
:class:`~trellis.server.core.principal.Principal` first (the anonymous principal of
the org named by ``X-Organization-ID`` for public calls), then domain arguments, and
returns frozen dataclasses: records, ``Created*`` answers that show a secret once,
``Listing`` pages (a :class:`PageRequest` in). The exceptions are the credential
exchanges that come before there is a principal (``authenticate``, ``login``,
``refresh``, ``token``, ``revoke_token``, ``validate_machine_user``), which take the
presented credentials, and the public documents (``jwks``, ``server_metadata``).
Defaults and rules live here, not in the edges. Every state change is audited
through ``core.audit`` in the transaction that makes it. Each method runs one
transaction (``db.write()``/``db.read()``; the slow Argon2 work runs outside them). Errors are
``trellis.server.core.errors`` (NotFound, InvalidArgument, FailedPrecondition),
``store.Conflict``, or the AuthError family of ``principal``; messages are safe to
show. Objects of another org behave exactly like unknown ids (NotFound).

Choices where the seeds are silent:

* Keys. ``bootstrap`` (or ``ensure_signing_key``) creates an ES256 key when none is
  active and retires keys rotated out longer ago than the access-token lifetime.
  The ring is cached; a token naming an unknown kid reloads it (at most every
  ``KEY_RELOAD_MIN_SECS``), and it is reloaded anyway when older than five minutes.
* Authentication cache. Positive results are cached by token digest for
  ``cache_secs`` (default 5 s), never beyond the credential's expiry. Changes made
  through this instance (logout, revocations, user/org/machine-user changes) evict
  at once; changes made on another replica take effect within ``cache_secs``.
* Scopes at use time are always cut down to what the owner holds *now*: JWT scopes
  and PAT scopes ∩ the user's current role scopes, client-credential scopes ∩ the
  client's allowed scopes. Machine users' records carry no scopes: they get the
  operator role's set (workflows read/write/run, jobs:work, logs:read,
  workers:read) and never admin scopes.
* ``X-Organization-ID`` selects, never grants: naming another org than the
  credential's is PermissionDenied(reason="organization_mismatch"). PATs require it
  (MissingOrganization when absent or malformed); for other credentials it is
  optional, but a malformed one is MissingOrganization too.
* A suspended org: its credentials are refused with
  PermissionDenied(reason="organization_suspended") (the credential is genuine, the
  org may not act), and its users cannot log in.
* Login answers "invalid username or password" (reason ``invalid_credentials``) for
  an unknown user (after ``dummy_verify``) and a wrong password alike. Disabled
  accounts (``account_disabled``) are only reported after a correct password.
  TOTP: ``mfa_required`` without a code, ``invalid_mfa_code`` for a wrong or
  replayed one.
* Refresh (seed 002's ``{"token": ...}``). The login answer carries an access JWT
  and an opaque refresh token (``trl_rt_``). ``refresh`` accepts either:
  - the refresh token: it is rotated (new refresh token + new access token);
    presenting a rotated-away one again revokes the whole session;
  - the current access JWT of a live session: its jti is denylisted and a new
    access token is issued (``refresh_token`` None: the session's refresh token is
    unchanged); presenting an already exchanged JWT again revokes the session.
  Refreshed tokens carry the user's current role scopes.
* ``logout`` revokes the session (login JWTs) and denylists the JWT's jti.
* PATs: requesting scopes the owner's roles (or, for one's own token, the calling
  credential) do not grant is InvalidArgument, not silent narrowing; without
  scopes a PAT carries the calling credential's; it expires after 1 to 366 days
  (30 by default) or at a given time; the plaintext is returned once.
* Organizations are deployment-wide objects: administrators (admin:orgs) of the
  system org (``DEFAULT_ORG``) create, list and change any of them; anyone else
  sees only their own, and another org is NotFound. One's own org cannot be
  suspended. A new org starts without users unless ``create_org`` is given its
  first administrator, stored in the same transaction.
* OAuth2: client_credentials only for confidential clients, scopes = requested ∩
  allowed (all allowed when none requested), never a refresh token.
  authorization_code needs an exact registered redirect_uri, PKCE S256 for public
  clients (``plain`` refused), codes live 60 s and are spent before they are
  checked; it answers an access token only (no refresh token yet). Access tokens
  name their client in an ``azp`` claim; ``revoke_token`` (RFC 7009) revokes only
  tokens of the authenticated client and ignores the rest; ``introspect``
  (RFC 7662) covers JWTs, PATs and machine tokens. Errors: :class:`OAuthError`
  (400, ``reason`` = RFC 6749 code) and :class:`InvalidClient` (401).
* Policies: ``check_policy`` evaluates the org's enabled rules (cached 5 s per
  org, evicted locally on change); subjects match ``user:<id>``, ``user:<name>``
  and ``role:<role>`` (``machine:``/``client:`` likewise). Deny wins.
* Admin methods take the acting principal, check the scope (defence in depth
  behind the edge's per-RPC check; refusals are audited as "denied") and work in
  ``actor.org_id``. Every state change and every login (failed too) is audited.
"""

from __future__ import annotations

from trellis.server.identity._accounts import (
    DEFAULT_PAT_DAYS,
    MAX_PAT_DAYS,
    CreatedMachineUser,
    CreatedPat,
    MachineValidation,
    RegisteredBackend,
)
from trellis.server.identity._admin import FirstAdmin
from trellis.server.identity._base import MACHINE_SCOPES, UserInfo
from trellis.server.identity._discovery import ServerMetadata
from trellis.server.identity._oauth_types import (
    AuthorizationGrant,
    CreatedClient,
    Introspection,
    InvalidClient,
    OAuthError,
    TokenGrant,
)
from trellis.server.identity._paging import Listing, PageRequest
from trellis.server.identity._service import Identity
from trellis.server.identity._sessions import LoginResult
from trellis.server.identity._users import DEFAULT_ROLES
from trellis.server.identity.scopes import scope_catalogue
from trellis.server.identity.secrets_ import basic_credentials
from trellis.server.identity.store import (
    AuditEvent,
    MachineBackend,
    MachineUser,
    OAuthClient,
    Organization,
    Pat,
    PolicyRule,
    StoredPolicy,
)

__all__ = [
    "DEFAULT_PAT_DAYS",
    "DEFAULT_ROLES",
    "MACHINE_SCOPES",
    "MAX_PAT_DAYS",
    "AuditEvent",
    "AuthorizationGrant",
    "CreatedClient",
    "CreatedMachineUser",
    "CreatedPat",
    "FirstAdmin",
    "Identity",
    "Introspection",
    "InvalidClient",
    "Listing",
    "LoginResult",
    "MachineBackend",
    "MachineUser",
    "MachineValidation",
    "OAuthClient",
    "OAuthError",
    "Organization",
    "PageRequest",
    "Pat",
    "PolicyRule",
    "RegisteredBackend",
    "ServerMetadata",
    "StoredPolicy",
    "TokenGrant",
    "UserInfo",
    "basic_credentials",
    "scope_catalogue",
]
