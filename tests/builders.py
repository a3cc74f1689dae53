"""Tiny builders shared by the tests: routing files, a record, a connector to the simulator."""

from __future__ import annotations

import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

from config.routing import parse
from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator
from connectors.transport import Unlimited
from sync.compiler import CompiledRouting, compile_routing
from sync.models import Record
from sync.normalize import build_record
from sync.ports import Connector

# The first-touch SLA tests' team: three reps in HubSpot (owners 100-102) and their manager.
SLA_REPS = """\
version: 1
reps:
  - {id: ava, crm_ids: {hubspot: "100"}, manager: max}
  - {id: ben, crm_ids: {hubspot: "101"}, manager: max}
  - {id: cara, crm_ids: {hubspot: "102"}, manager: max}
  - {id: max, crm_ids: {hubspot: "103"}}
"""


def sla_routing(first_touch: str, vip_first_touch: str | None = None) -> str:
    """The SLA_REPS routing file where everyone goes to pool `smb` (ava, ben, cara), whose
    first-touch breach re-routes once and then tells max; `vip.example` goes to max alone (a rep
    target: its breach escalates at once), with its own `first_touch` when given."""
    vip_sla = "" if vip_first_touch is None else f"    sla: {{first_touch: {vip_first_touch}}}\n"
    return (f"{SLA_REPS}pools:\n  smb: {{members: [ava, ben, cara]}}\n"
            f"sla: {{first_touch: {first_touch}, on_breach: reroute, max_reroutes: 1}}\n"
            "rules:\n  - name: vip\n    when: {domain: {eq: vip.example}}\n"
            f"    assign: {{rep: max}}\n{vip_sla}  - {{name: everyone, assign: {{pool: smb}}}}\n")


def write_routing(directory: Path, text: str) -> Path:
    """`text` written as `routing.yaml` in `directory` (UTF-8): its path."""
    path = directory / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def empty_crm(seed: int, **options: Any) -> Simulator:
    """A simulated CRM from `seed` with its owners and users but no records (each test creates
    the ones it routes); `options` (owners, days) go to `Simulator.seed`."""
    simulator = Simulator(seed)
    simulator.seed(companies=0, contacts=0, accounts=0, leads=0, **options)
    return simulator


def routing(yaml_text: str) -> CompiledRouting:
    return compile_routing(parse(textwrap.dedent(yaml_text)))


def rec(**fields: object) -> Record:
    fields.setdefault("id", "r1")
    obj = str(fields.pop("object", "account"))
    crm = str(fields.pop("crm", "file"))
    created_at = fields.pop("created_at", None)
    return build_record(fields, object=obj, crm=crm, created_at=created_at)  # type: ignore[arg-type]


def connector(crm: str, routing: CompiledRouting | None = None) -> closing[Connector]:
    """`crm`'s connector as the environment configures it (the served simulator: the `running`
    fixture), closed on leaving the `with`; with `routing`, reading the fields that file needs.
    No limiter and no sleeping: the transport's backoff is real code, but time is not what
    these tests are about."""
    if routing is None:
        return closing(registry.create(crm, Settings(), limiter=Unlimited(),
                                       transport_sleep=lambda _: None))
    return closing(registry.create_for(crm, routing, Settings(), limiter=Unlimited(),
                                       transport_sleep=lambda _: None))


def unowned(sim: Simulator, crm: str = "hubspot", obj: str = "companies") -> list[str]:
    """The ids of `sim`'s `crm` `obj` records nobody owns, in the simulator's order."""
    return [i for i in sim.ids(crm, obj) if sim.owner_of(crm, obj, i) is None]
