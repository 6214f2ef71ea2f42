"""AdminClient: organization billing usage and the audit log (official 0.38 surface).

Every method returns an ``APIFuture`` at once. The local server serves none of these
endpoints (expect ``NotFoundError`` there); the real service needs an admin role.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from .. import types
from ..futures import APIFuture
from .rest import RestBase
from .twins import awaited_twin

__all__ = ["AdminClient"]

AuditEventType = Literal["all", "checkpoints", "projects", "teams", "organizations"]


def _when(value: dt.datetime | dt.date | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


class AdminClient(RestBase):
    """Organization-level reads: ``AdminClient()`` needs no ServiceClient and no session."""

    _sdk_class = "AdminClient"

    def get_audit_log(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> APIFuture[types.AuditLogResponse]:
        """Audit-log entries of one UTC day (today by default) for ``event_type``."""
        query = {"event_type": event_type, "day": day.isoformat() if day is not None else None}
        return self._run(self._call("get_audit_log", "get_audit_log", query=query))

    get_audit_log_async = awaited_twin(get_audit_log)

    def get_billing_usage(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> APIFuture[types.BillingUsageResponse]:
        """Hourly-bucketed usage events in ``[starting_on, ending_before)``."""
        query = {"starting_on": _when(starting_on), "ending_before": _when(ending_before)}
        return self._run(self._call("get_billing_usage", "get_billing_usage", query=query))

    get_billing_usage_async = awaited_twin(get_billing_usage)

    def get_current_checkpoint_storage_usage(
        self, project_id: str | None = None
    ) -> APIFuture[types.CurrentCheckpointStorageUsageResponse]:
        """Checkpoint count, size and projected cost, for the organization or one project."""
        return self._run(
            self._call(
                "get_current_checkpoint_storage_usage",
                "get_current_checkpoint_storage_usage",
                query={"project_id": project_id},
            )
        )

    get_current_checkpoint_storage_usage_async = awaited_twin(get_current_checkpoint_storage_usage)

    def __repr__(self) -> str:
        return f"<AdminClient {self._session.settings.base_url or 'embedded'}>"
