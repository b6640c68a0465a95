"""What a caller bound to another principal is told, counted once per refused operation.

A session bound to a principal answers other principals as if it did not exist (or 403, when
PRINCIPAL_MISMATCH_STATUS says so): the same answer whether the id is taken or not, so ids cannot be probed.
"""

from __future__ import annotations

from app import metrics, rules
from app.config import MismatchStatus, Settings
from app.errors import PrincipalMismatch, SessionNotFound
from app.records import Lookup


def mismatch(settings: Settings, tenant: str, operation: str) -> Exception:
    """A caller bound to another principal: counted, answered like a missing session (or 403)."""
    metrics.count_binding_mismatch(tenant, operation)
    if settings.principal_mismatch_status is MismatchStatus.forbidden:
        return PrincipalMismatch("The session is bound to a different principal.")
    return SessionNotFound()


def not_changed(
    settings: Settings, tenant: str, operation: str, lookup: Lookup, principal: str | None
) -> Exception:
    """Why a change guarded by the binding found nothing to change: another principal's session, or none
    (with the reason it ended, when known)."""
    if lookup.session is not None and rules.bound_elsewhere(lookup.session["principal"], principal):
        return mismatch(settings, tenant, operation)
    return SessionNotFound(lookup.ended_reason)
