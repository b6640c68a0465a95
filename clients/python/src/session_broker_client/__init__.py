"""Client of the session broker, and (in `session_broker_client.mcp`) MCP server middleware that makes
a multi-replica MCP fleet share its sessions through the broker."""

from session_broker_client.analytics import AnalyticsReporter
from session_broker_client.client import SessionBroker
from session_broker_client.errors import (
    AdminRequired,
    BrokerError,
    BrokerUnavailable,
    InternalError,
    MetadataTooLarge,
    MethodNotAllowed,
    NotAcceptable,
    PayloadTooLarge,
    PreconditionFailed,
    PrincipalMismatch,
    QuotaExceeded,
    RouteNotFound,
    SessionExists,
    SessionIdRetired,
    SessionNotFound,
    TenantKeyRequired,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from session_broker_client.events import EventFeed, EventStream
from session_broker_client.models import Event, RequestOutcome, Session, SessionPage, Stats, Touched
from session_broker_client.near_cache import NearCache, NearCacheStats
from session_broker_client.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AdminRequired",
    "AnalyticsReporter",
    "BrokerError",
    "BrokerUnavailable",
    "Event",
    "EventFeed",
    "EventStream",
    "InternalError",
    "MetadataTooLarge",
    "MethodNotAllowed",
    "NearCache",
    "NearCacheStats",
    "NotAcceptable",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PrincipalMismatch",
    "QuotaExceeded",
    "RequestOutcome",
    "RetryPolicy",
    "RouteNotFound",
    "Session",
    "SessionBroker",
    "SessionExists",
    "SessionIdRetired",
    "SessionNotFound",
    "SessionPage",
    "Stats",
    "TenantKeyRequired",
    "Touched",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
    "__version__",
]
