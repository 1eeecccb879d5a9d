"""The database schema, as typed SQLAlchemy models.

The declarative classes are the single place the schema is written down, and
Alembic's migrations are checked against them in tests. The engine queries the
tables through SQLAlchemy Core (``Model.__table__``), and on its hot paths
through the plain SQL of ``_sql`` (whose statements name these columns).

Times are integer epoch milliseconds taken from the database clock, so lease
expiry means the same thing on every replica. Every table carries ``org_id``.
"""

from ._base import NAMING, Base, BigId, table
from ._engine import (
    JobEdgeRow,
    JobRow,
    LabelSetRow,
    LeaseRow,
    LogChunkRow,
    RunRow,
    WorkerRow,
    WorkflowRow,
    WorkflowVersionRow,
)
from ._events import EventRow
from ._identity import (
    ApiTokenRow,
    MachineBackendRow,
    MachineUserRow,
    OAuthClientRow,
    OAuthCodeRow,
    OrganizationRow,
    PolicyRow,
    RateLimitBucketRow,
    RetiredRefreshTokenRow,
    RevokedJtiRow,
    SessionRow,
    SigningKeyRow,
    UserRow,
)
from ._shared import AuditEventRow, ServerSecretRow
from ._triggers import ScheduleRow, TopicRecordRow, TopicRow, TopicTriggerRow
from ._webhooks import WebhookDeliveryRow, WebhookSubscriptionRow

__all__ = [
    "NAMING",
    "ApiTokenRow",
    "AuditEventRow",
    "Base",
    "BigId",
    "EventRow",
    "JobEdgeRow",
    "JobRow",
    "LabelSetRow",
    "LeaseRow",
    "LogChunkRow",
    "MachineBackendRow",
    "MachineUserRow",
    "OAuthClientRow",
    "OAuthCodeRow",
    "OrganizationRow",
    "PolicyRow",
    "RateLimitBucketRow",
    "RetiredRefreshTokenRow",
    "RevokedJtiRow",
    "RunRow",
    "ScheduleRow",
    "ServerSecretRow",
    "SessionRow",
    "SigningKeyRow",
    "TopicRecordRow",
    "TopicRow",
    "TopicTriggerRow",
    "UserRow",
    "WebhookDeliveryRow",
    "WebhookSubscriptionRow",
    "WorkerRow",
    "WorkflowRow",
    "WorkflowVersionRow",
    "table",
]
