"""Registration of the identity servicers (auth, identity, oauth, machine users, users).

Each is a thin edge over ``Identity``: the auth interceptor has already
resolved the caller and checked the scope each RPC declares; ``Identity``
checks again what depends on the object (one's own token, another org's id)
and audits.
"""

from __future__ import annotations

import grpc

from trellis.server.api.auth import Auth
from trellis.server.api.identity import IdentityServicer
from trellis.server.api.machines import Machines
from trellis.server.api.oauth import OAuth
from trellis.server.api.users import add_user_service
from trellis.server.identity import Identity
from trellis.v1 import auth_pb2_grpc, identity_pb2_grpc, machine_pb2_grpc, oauth_pb2_grpc


def add_identity_services(server: grpc.Server, identity: Identity, public_url: str) -> None:
    """Registers the servicers of auth.proto, identity.proto, oauth.proto,
    machine.proto and users.proto."""
    # The generated registration helpers are untyped.
    auth_pb2_grpc.add_AuthServiceServicer_to_server(Auth(identity), server)  # type: ignore[no-untyped-call]
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(  # type: ignore[no-untyped-call]
        IdentityServicer(identity), server
    )
    oauth_pb2_grpc.add_OAuthServiceServicer_to_server(  # type: ignore[no-untyped-call]
        OAuth(identity, public_url), server
    )
    machine_pb2_grpc.add_MachineUserServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Machines(identity), server
    )
    add_user_service(server, identity)
