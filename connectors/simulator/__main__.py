"""`python -m connectors.simulator`: seed a simulator and serve both CRMs until Ctrl-C."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from connectors.simulator.core import Simulator
from connectors.simulator.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors.simulator",
                                     description="Local HubSpot and Salesforce simulator.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--hubspot-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--salesforce-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-tls", action="store_true", help="serve Salesforce over http")
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--contacts", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--sf-contacts", type=int, default=0)
    parser.add_argument("--hubspot-burst", type=int, default=100)
    parser.add_argument("--salesforce-daily", type=int, default=15_000)
    args = parser.parse_args(argv)

    sim = Simulator(args.seed, hubspot_burst=args.hubspot_burst,
                    salesforce_daily=args.salesforce_daily)
    sim.seed(companies=args.companies, contacts=args.contacts, accounts=args.accounts,
             leads=args.leads, sf_contacts=args.sf_contacts)
    stop = threading.Event()
    # SIGTERM too, so `kill PID` cleans up the temporary certificate files like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve(sim, host=args.host, hubspot_port=args.hubspot_port,
               salesforce_port=args.salesforce_port, tls=not args.no_tls) as running:
        creds = sim.salesforce_credentials
        print(f"HubSpot     {running.hubspot_url}   token: {sorted(sim.hubspot_tokens)[0]}")
        print(f"Salesforce  {running.salesforce_url}   session: "
              f"{sorted(sim.salesforce_sessions)[0]}")
        print(f"            OAuth user {creds.username} / {creds.password}"
              f"{creds.security_token}, client {creds.consumer_key} / {creds.consumer_secret}")
        print(f"CA bundle   {running.ca_bundle_path}")
        print("Environment:")
        for name, value in running.env().items():
            print(f"  export {name}={shlex.quote(value)}")
        print("Stats at /__simulator__/stats on either server. Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
