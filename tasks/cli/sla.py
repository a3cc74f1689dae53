"""`account-router sla-check`: one first-touch SLA pass in this process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from sync.pipeline import Pipeline
from sync.ports import Connector, CredentialsError
from tasks.cli.common import (
    ConfigOpt,
    NowOpt,
    StateOpt,
    err,
    load_routing_file,
    open_state,
    out,
    parse_instant,
    print_json,
)


def sla_check(
    now: NowOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the pass's counts as JSON.")
                        ] = False,
) -> None:
    """Run one first-touch SLA pass: re-route or escalate records left untouched too long.

    Touched records leave the watch; breached ones are re-routed or escalated as their `sla:`
    says. Beat runs the same pass every minute."""
    # Deferred like open_pipeline's: the metrics and connectors load only for this command.
    from connectors import registry
    from connectors.settings import Settings
    from tasks.followers import followers_for
    from tasks.metrics import metrics_for
    from tasks.notify import notifier_for
    from tasks.sla import check_pass

    routing = load_routing_file(config)
    instant = parse_instant(now) if now else datetime.now(UTC)
    settings = Settings()
    store = open_state(state)
    connectors: dict[str, Connector] = {}
    pipelines: dict[str, Pipeline | None] = {}

    def pipeline(crm: str) -> Pipeline | None:
        # One connector per CRM the due entries name, on first need; a CRM without
        # credentials here leaves its entries for a pass that has them.
        if crm not in pipelines:
            try:
                connectors[crm] = registry.create_for(crm, routing, settings)
            except (ValueError, CredentialsError) as exc:
                err.print(f"warning: {crm}: {exc}; its due records wait", soft_wrap=True)
                pipelines[crm] = None
                return None
            pipelines[crm] = Pipeline(connectors[crm], routing, store,
                                      recheck_after=settings.recheck_after_seconds,
                                      metrics=metrics_for(settings),
                                      followers=followers_for(settings, store, routing, crm))
        return pipelines[crm]

    try:
        report = check_pass(routing, store, pipeline, instant, metrics=metrics_for(settings),
                            notifier=notifier_for(settings, store, routing))
    finally:
        for connector in connectors.values():
            connector.close()
        store.close()
    if json_out:
        print_json(report.to_dict())
    else:
        breaches = ", ".join(f"{n} {action}" for action, n in sorted(report.breaches.items()))
        out.print(f"{report.due} due: {report.touched} touched, "
                  f"{sum(report.breaches.values())} breached ({breaches or 'none'}), "
                  f"{report.rerouted} re-routed, {report.ended} ended (owner changed or "
                  f"record gone), {report.unread} waiting", soft_wrap=True)
    if report.unread:
        raise typer.Exit(1)
