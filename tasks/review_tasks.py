"""Celery task `review.expire`: beat's pass over review items past their deadline (every minute)."""

from __future__ import annotations

from celery.utils.log import get_task_logger

from tasks.celery_app import EXPIRE_REVIEW_TASK, app
from tasks.review import expire_pass

log = get_task_logger(__name__)


@app.task(name=EXPIRE_REVIEW_TASK, ignore_result=True)
def expire() -> dict[str, list[str]]:
    """Approve or escalate (once) each open item past its deadline, as `on_review_timeout`
    says; idempotent: a closed or already escalated item is left alone."""
    report = expire_pass()
    if report.approved or report.superseded or report.escalated or report.failed:
        log.info("review items past their deadline", extra=report.to_dict())
    return report.to_dict()
