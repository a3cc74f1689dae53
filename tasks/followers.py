"""What follows a landed owner write in this deployment: each feature's `AfterWrite` follower."""

from __future__ import annotations

from config.settings import Settings
from sync.compiler import CompiledRouting
from sync.ports import AfterWrite
from sync.state.base import StateStore


def followers_for(settings: Settings, store: StateStore, routing: CompiledRouting, crm: str
                  ) -> list[AfterWrite]:
    """The followers every pipeline of this process passes its landed writes to, in order:
    the CLI, the workers, the dashboard's retry and the demo all build their pipelines with
    this list, so a write is followed the same way whichever path made it. Service mode (a
    Redis URL set) hands work to Celery tasks; embedded mode does it inline."""
    # Deferred: slack-sdk and smtplib load only where a pipeline is built.
    from tasks.notify import notify_followers
    from tasks.sla import sla_follower

    followers: list[AfterWrite] = []
    followers += notify_followers(settings, store, routing)
    followers.append(sla_follower(crm, routing, store))
    return followers
