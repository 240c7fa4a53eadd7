"""Budget alerts: threshold crossings POSTed to team webhooks, once per threshold and period."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.alerts.dispatcher import DispatchConfig
from service.alerts.service import AlertService

if TYPE_CHECKING:
    from service.runtime import Runtime

__all__ = ["AlertService", "install"]


def install(rt: Runtime) -> AlertService:
    """Build the runtime's alert service and subscribe it to settles and budget changes (no I/O)."""
    settings = rt.settings
    service = AlertService(
        rt.sessions,
        rules=rt.budgets.rules,
        standing=rt.store.standing,
        spawn=rt.spawn,
        default_thresholds=settings.alert_thresholds,
        default_tz=settings.budget_timezone,
        dispatch=DispatchConfig(
            retry_max_s=settings.alert_retry_max_s,
            default_tz=settings.budget_timezone,
            # Not a Settings field yet; "auto" picks Slack's body for hooks.slack.com.
            webhook_format=getattr(settings, "alert_webhook_format", "auto"),
        ),
    )
    rt.settle_hooks.append(service.on_settle)
    rt.bus.subscribe(service.on_change)
    return service
