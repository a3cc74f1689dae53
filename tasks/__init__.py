"""Entry points; `celery -A tasks worker|beat` finds the Celery app here, built on first use."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `import tasks.cli` (embedded use, the CLI) neither imports Celery nor reads the
    # broker settings; only `celery -A tasks` (which asks for `tasks.app`) builds the app.
    if name == "app":
        from tasks.celery_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
