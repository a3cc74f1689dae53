"""A worker process's pipeline: rebuilt when the routing file or a list file changes, kept on a
broken edit, and reading the CRM fields the rules name. Against the CRM simulator."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.simulator import Simulator
from tasks import worker
from tests.builders import empty_crm
from tests.tasks.test_celery import in_process_worker

RULES = """version: 1
reps: [{{id: ava, crm_ids: {{hubspot: '101'}}}}, {{id: ben, crm_ids: {{hubspot: '102'}}}}]
lists: {{gold: {{file: gold.txt}}}}
rules:
  - {{name: gold-list, when: {{domain: {{in_list: gold}}}}, assign: {{rep: ben}}}}
  - {{name: tiered, when: {{fields.tier: {{eq: platinum}}}}, assign: {{rep: ben}}}}
  - {{name: everyone, assign: {{rep: {everyone}}}}}
"""


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(3, days=1)


@pytest.fixture
def routing_file(tmp_path: Path, sim: Simulator, monkeypatch) -> Iterator[Path]:
    path = tmp_path / "routing.yaml"
    path.write_text(RULES.format(everyone="ava"))
    (tmp_path / "gold.txt").write_text("# gold accounts\n")
    with in_process_worker(sim, path, f"sqlite:///{tmp_path / 's.db'}", monkeypatch):
        yield path


def edit(path: Path, text: str) -> None:
    """Write and move the mtime on, so the change shows even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def company(sim: Simulator, **props: str) -> str:
    return str(sim.hubspot_create("companies", {"name": "Co", **props}))


def route(sim: Simulator, record_id: str) -> str | None:
    worker.run_route("hubspot", "companies", [record_id], "webhook")
    return sim.owner_of("hubspot", "companies", record_id)


def test_given_a_running_worker_when_the_routing_file_is_edited_then_the_next_task_uses_it(
        sim, routing_file):
    first = worker.pipeline_for("hubspot")
    assert route(sim, company(sim, domain="a.example")) == "101"

    edit(routing_file, RULES.format(everyone="ben"))

    assert worker.pipeline_for("hubspot") is not first
    assert route(sim, company(sim, domain="b.example")) == "102"


def test_given_an_unchanged_routing_file_when_tasks_run_then_the_pipeline_is_reused(
        sim, routing_file):
    assert worker.pipeline_for("hubspot") is worker.pipeline_for("hubspot")


def test_given_a_list_file_edit_when_the_next_task_runs_then_the_list_is_read_again(
        sim, routing_file):
    assert route(sim, company(sim, domain="gold.example")) == "101"

    edit(routing_file.parent / "gold.txt", "gold.example\n")

    assert route(sim, company(sim, domain="gold.example")) == "102"


def test_given_a_broken_edit_when_tasks_run_then_the_previous_rules_keep_routing_and_it_is_logged_once(  # noqa: E501
        sim, routing_file, caplog):
    first = worker.pipeline_for("hubspot")

    edit(routing_file, RULES.format(everyone="nobody-we-know"))
    with caplog.at_level(logging.ERROR, logger=worker.log.name):
        assert worker.pipeline_for("hubspot") is first
        assert worker.pipeline_for("hubspot") is first
    assert route(sim, company(sim, domain="c.example")) == "101"
    refusals = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(refusals) == 1
    assert "rules[2]" in refusals[0].getMessage()

    # Fixed again: the fix is picked up.
    edit(routing_file, RULES.format(everyone="ben"))
    assert route(sim, company(sim, domain="d.example")) == "102"


def test_given_a_rule_on_a_custom_property_when_a_worker_routes_then_the_property_is_read(
        sim, routing_file):
    platinum = company(sim, domain="p.example", tier="Platinum")

    assert route(sim, platinum) == "102"
