"""The events layer: the event log's readers (pages and followers) and its
retention. Its writer is in core (``trellis.server.core.eventlog``), so that
every layer appends events in its own transactions.
"""

from trellis.server.core.eventlog import EventType
from trellis.server.events._cursor import Cursor
from trellis.server.events._reader import EventLog, Filter, Wakeups, cursor_of, render
from trellis.server.events._retention import prune

__all__ = ["Cursor", "EventLog", "EventType", "Filter", "Wakeups", "cursor_of", "prune", "render"]
