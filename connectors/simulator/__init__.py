"""A local HubSpot and Salesforce for tests, demos and benchmarks: seeded data, limits, faults."""

# HubSpot (http): `/crm/v3/objects/{companies|contacts}` list, `/{id}` get and patch,
# `/batch/read`, `/batch/update`, `/search`; `/crm/v3/owners`, `/crm/v3/owners/{id}`.
# Salesforce (https): `/services/data/vNN.N/query|queryAll` (+ `/{locator}-{offset}`),
# `/composite/sobjects` (PATCH), `/sobjects/{Obj}/{id}` (GET, PATCH), `/limits`;
# `/services/data`, `/services/oauth2/token`.
# Both: `/__simulator__/stats` (GET), `/__simulator__/faults` (GET, POST), `/__simulator__/limits`,
# `/__simulator__/reset_stats`, `/__simulator__/reset_daily` (POST).

from connectors.simulator.core import (
    HUBSPOT_TOKEN,
    SALESFORCE_SESSION,
    Faults,
    SalesforceCredentials,
    Simulator,
)
from connectors.simulator.hubspot import hubspot_app
from connectors.simulator.salesforce import salesforce_app
from connectors.simulator.server import RunningSimulator, serve

__all__ = ["HUBSPOT_TOKEN", "SALESFORCE_SESSION", "Faults", "RunningSimulator",
           "SalesforceCredentials", "Simulator", "hubspot_app", "salesforce_app", "serve"]
