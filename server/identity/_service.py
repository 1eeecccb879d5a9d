"""The assembled service: one class over the parts, each a mixin of ``Base``."""

from __future__ import annotations

from trellis.server.identity._accounts import Accounts
from trellis.server.identity._admin import Admin
from trellis.server.identity._oauth import OAuth
from trellis.server.identity._sessions import Sessions
from trellis.server.identity._users import Users


class Identity(Sessions, OAuth, Users, Accounts, Admin):
    """The identity service over one database; see the package docstring."""
