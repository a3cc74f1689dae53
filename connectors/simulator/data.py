"""Seeded, realistic CRM data: owners and users of the example routing file, companies and leads."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from connectors.simulator.schema import sf_id

if TYPE_CHECKING:
    from connectors.simulator.core import Simulator

# The reps of config/examples/routing.yaml, in crm_id order: HubSpot owner "100" + i is Salesforce
# user sf_id("005", 100 + i). Gus left: archived in HubSpot, inactive in Salesforce.
REPS = [("Maya", "Reyes"), ("Ava", "Stone"), ("Ben", "Ortiz"), ("Hana", "Sato"),
        ("Eve", "Novak"), ("Finn", "Walsh"), ("Cara", "Diaz"), ("Dev", "Patel"),
        ("Eli", "Cohen"), ("Gus", "Lind")]
DEPARTED_INDEX = 9  # gus
EXTRA_FIRST = ["Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes"]
EXTRA_LAST = ["Berg", "Hale", "Ivers", "Kahn", "Lowe", "Moss", "Nash", "Park", "Rowe", "Shaw"]

HUBSPOT_ARCHIVED_OWNER = "190"  # a former employee besides gus
HUBSPOT_QUEUE_OWNER = "199"  # a QUEUE-type owner
SALESFORCE_FORMER_USER = sf_id("005", 190)  # inactive
SALESFORCE_INTEGRATION_USER = sf_id("005", 900)  # active; not a rep
SALESFORCE_LEAD_QUEUE = sf_id("00G", 199)  # Group Type 'Queue'
SALESFORCE_REGULAR_GROUP = sf_id("00G", 198)  # Group Type 'Regular': never an owner
MAX_OWNERS = 90  # person owners use ids 100..189

_FALLBACK_NAMED = ["acme.com", "globex.com", "initech.com", "umbrella-corp.com", "hooli.com"]

_NAME_HEAD = ["Blue", "North", "Silver", "Bright", "Summit", "Cedar", "Harbor", "Iron", "Nova",
              "Pioneer", "Quantum", "River", "Stone", "Vertex", "Atlas", "Beacon", "Crest",
              "Delta", "Evergreen", "Falcon", "Granite", "Horizon", "Juniper", "Keystone",
              "Lumen", "Meridian", "Oak", "Pinnacle", "Redwood", "Sterling", "Tidal", "Union",
              "Vista", "Willow", "Zenith", "Apex", "Cobalt", "Ember", "Frontier", "Orbit"]
_NAME_TAIL = ["Analytics", "Logistics", "Health", "Systems", "Labs", "Foods", "Capital",
              "Energy", "Software", "Robotics", "Media", "Partners", "Biotech", "Networks",
              "Dynamics", "Clinics", "Retail", "Manufacturing", "Consulting", "Security"]
_LEGAL = ["Inc.", "LLC", "Ltd", "GmbH", "Corp.", "Co.", "", "", "", ""]
_TLDS = [".com"] * 6 + [".io", ".co", ".net", ".co.uk", ".de"]
_FREE_MAIL = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "gmx.de"]

# (HubSpot internal value, Salesforce picklist label), weighted towards tech; health care
# appears in both spellings so rules on `Hospital & Health Care` meet HOSPITAL_HEALTH_CARE.
_INDUSTRIES = [
    ("COMPUTER_SOFTWARE", "Technology"), ("COMPUTER_SOFTWARE", "Technology"),
    ("INFORMATION_TECHNOLOGY_AND_SERVICES", "Technology"), ("INTERNET", "Technology"),
    ("HOSPITAL_HEALTH_CARE", "Healthcare"), ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care"),
    ("MEDICAL_DEVICES", "Medical Devices"), ("FINANCIAL_SERVICES", "Finance"),
    ("BANKING", "Banking"), ("INSURANCE", "Insurance"), ("RETAIL", "Retail"),
    ("MECHANICAL_OR_INDUSTRIAL_ENGINEERING", "Manufacturing"),
    ("LOGISTICS_AND_SUPPLY_CHAIN", "Transportation"), ("MARKETING_AND_ADVERTISING", "Media"),
    ("EDUCATION_MANAGEMENT", "Education"), ("TELECOMMUNICATIONS", "Telecommunications"),
    ("PHARMACEUTICALS", "Biotechnology"), ("REAL_ESTATE", "Real Estate"),
    ("MANAGEMENT_CONSULTING", "Consulting"), ("OIL_ENERGY", "Energy"),
]

# (city, state, postal code, country spellings as people type them)
_US = ("United States", "United States", "US", "USA", "United States of America")
_PLACES = [
    ("San Francisco", "CA", "94105", _US), ("New York", "NY", "10001", _US),
    ("Austin", "TX", "78701", _US), ("Boston", "MA", "02110", _US),
    ("Chicago", "IL", "60601", _US), ("Seattle", "WA", "98101", _US),
    ("Denver", "CO", "80202", _US), ("Atlanta", "GA", "30303", _US),
    ("Miami", "Florida", "33131", _US), ("Los Angeles", "California", "90012", _US),
    ("Raleigh", "North Carolina", "27601", _US), ("Portland", "OR", "97204", _US),
    ("London", "England", "EC1A 1BB", ("United Kingdom", "UK", "GB")),
    ("Manchester", "England", "M1 1AE", ("United Kingdom", "UK")),
    ("Berlin", "Berlin", "10115", ("Germany", "DE", "Deutschland")),
    ("Munich", "Bavaria", "80331", ("Germany", "DE")),
    ("Toronto", "ON", "M5H 2N2", ("Canada", "CA")),
    ("Vancouver", "BC", "V6B 1A1", ("Canada",)),
    ("Paris", "Île-de-France", "75001", ("France", "FR")),
    ("Amsterdam", "North Holland", "1012 AB", ("Netherlands", "NL", "The Netherlands")),
    ("Dublin", "Dublin", "D02 XY45", ("Ireland", "IE")),
    ("Sydney", "NSW", "2000", ("Australia", "AU")),
    ("Tokyo", "Tokyo", "100-0001", ("Japan", "JP")),
    ("Bangalore", "Karnataka", "560001", ("India", "IN")),
    ("São Paulo", "SP", "01000-000", ("Brazil", "BR")),
]
_PLACE_WEIGHTS = [6] * 12 + [2] * 13

_SF_SOURCES = ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Trade Show",
               "Webinar", "Advertisement", "Employee Referral", "Other"]
_HS_SOURCES = ["ORGANIC_SEARCH", "PAID_SEARCH", "EMAIL_MARKETING", "SOCIAL_MEDIA", "REFERRALS",
               "OTHER_CAMPAIGNS", "DIRECT_TRAFFIC", "OFFLINE", "PAID_SOCIAL"]
# HubSpot's contact property `numemployees` is an enumeration of ranges, not a number.
_HS_EMPLOYEE_RANGES = [(5, "1-5"), (25, "5-25"), (50, "25-50"), (100, "50-100"),
                       (500, "100-500"), (1000, "500-1000")]
_FIRST = ["Alex", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Drew",
          "Kim", "Lena", "Marco", "Priya", "Sofia", "Tomás", "Yuki", "Zara", "Noah", "Mia",
          "Liam", "Olivia", "Ethan", "Chloe", "Lucas", "Emma", "Hiro", "Anya", "Ravi"]
_LAST = ["Smith", "Johnson", "Lee", "Garcia", "Müller", "Brown", "Nguyen", "Kowalski", "Rossi",
         "Dubois", "Tanaka", "Singh", "O'Brien", "Silva", "Jensen", "Haddad", "Chen", "Novak"]
_TITLES = ["VP Sales", "Head of Operations", "CTO", "Procurement Manager", "IT Director",
           "Founder", "Marketing Lead", "CFO", "Office Manager", "Engineer"]
_LEAD_STATUS = ["Open - Not Contacted", "Working - Contacted", "Open - Not Contacted"]


@dataclass(frozen=True, slots=True)
class Company:
    """One fictional organisation; HubSpot companies, Salesforce accounts and leads draw on it."""

    name: str
    domain: str
    industry: tuple[str, str] | None
    employees: int | None
    revenue: int | None
    place: tuple[str, str, str, str] | None  # city, state, zip, country as typed
    named: bool = False  # from the named-accounts list: its domain is always exact


def named_domains() -> list[str]:
    """The example named-account domains (config/examples/named_accounts.txt)."""
    try:
        text = (resources.files("config.examples") / "named_accounts.txt").read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return list(_FALLBACK_NAMED)
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _company(rng: random.Random, used: set[str], domain: str | None = None) -> Company:
    named = domain is not None
    if domain is None:
        name = f"{rng.choice(_NAME_HEAD)} {rng.choice(_NAME_TAIL)}"
        slug = re.sub(r"[^a-z0-9]+", "", name.lower())
        domain = slug + rng.choice(_TLDS)
        n = 2
        while domain in used:
            domain = f"{slug}{n}{rng.choice(_TLDS)}"
            n += 1
        legal = rng.choice(_LEGAL)
        name = f"{name} {legal}".strip()
    else:
        # Named accounts get a name from their domain: umbrella-corp.com -> Umbrella Corp
        name = domain.split(".")[0].replace("-", " ").title()
    used.add(domain)
    band = rng.random()
    if band < 0.05:
        employees = None
    elif band < 0.45:
        employees = rng.randint(1, 50)
    elif band < 0.75:
        employees = rng.randint(51, 500)
    elif band < 0.93:
        employees = rng.randint(501, 5000)
    else:
        employees = rng.randint(5001, 100_000)
    revenue = (None if employees is None or rng.random() < 0.1
               else round(employees * rng.uniform(80_000, 250_000), -3))
    industry = None if rng.random() < 0.07 else rng.choice(_INDUSTRIES)
    if rng.random() < 0.05:
        place = None
    else:
        city, state, postal, countries = rng.choices(_PLACES, _PLACE_WEIGHTS)[0]
        place = (city, state, postal, rng.choice(countries))
    return Company(name, domain, industry, employees, int(revenue) if revenue else None, place,
                   named=named)


def _timestamps(rng: random.Random, n: int, now_ms: int, days: float) -> list[tuple[int, int]]:
    """(created, modified) pairs spread over the past `days`, oldest first, so ids (given in
    creation order) rise with creation time as they do in both CRMs."""
    span = int(days * 86_400_000)
    created = sorted(now_ms - rng.randint(0, span) for _ in range(n))
    return [(c, c + rng.randint(0, now_ms - c)) for c in created]


def _pick_owner(rng: random.Random, valid: list[str], stale: list[str], queue: str | None,
                shares: tuple[float, float, float]) -> str | None:
    """None (most records), else a valid, a stale (archived/inactive) or a queue owner."""
    roll = rng.random()
    valid_share, stale_share, queue_share = shares
    if roll < valid_share:
        return rng.choice(valid)
    if roll < valid_share + stale_share:
        return rng.choice(stale)
    if queue and roll < valid_share + stale_share + queue_share:
        return queue
    return None


def _people(rng: random.Random, domain: str) -> tuple[str, str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = re.sub(r"[^a-z]", "", f"{first[0]}{last}".lower().replace("ü", "u")) or "info"
    return first, last, f"{local}@{domain}"


def seed_owners(sim: Simulator, owners: int) -> None:
    if not 0 <= owners <= MAX_OWNERS:
        raise ValueError(f"owners must be between 0 and {MAX_OWNERS}")
    team = [{"id": "1", "name": "Sales", "primary": True}]
    for i in range(owners):
        first, last = REPS[i] if i < len(REPS) else (EXTRA_FIRST[i % 10], EXTRA_LAST[i // 10 % 10])
        email = f"{first.lower()}@example.com" if i < len(REPS) else \
            f"{first.lower()}.{last.lower()}@example.com"
        departed = i == DEPARTED_INDEX
        sim.add_hubspot_owner(str(100 + i), email, first, last, user_id=5_000_100 + i,
                              archived=departed, teams=team)
        sim.add_salesforce_user(sf_id("005", 100 + i), first, last, email, active=not departed)
    sim.add_hubspot_owner(HUBSPOT_ARCHIVED_OWNER, "olive@example.com", "Olive", "Grant",
                          user_id=5_000_190, archived=True)
    sim.add_hubspot_owner(HUBSPOT_QUEUE_OWNER, None, "Inbound", "Lead Queue", type="QUEUE")
    sim.add_salesforce_user(SALESFORCE_FORMER_USER, "Olive", "Grant", "olive@example.com",
                            active=False)
    sim.add_salesforce_user(SALESFORCE_INTEGRATION_USER, "Integration", "User",
                            "integration@example.com")
    sim.add_salesforce_group(SALESFORCE_LEAD_QUEUE, "Inbound Lead Queue", type="Queue")
    sim.add_salesforce_group(SALESFORCE_REGULAR_GROUP, "All Sales", type="Regular")


def seed(sim: Simulator, *, companies: int, contacts: int, accounts: int, leads: int,
         owners: int, sf_contacts: int, days: float,
         salesforce_default_owner: str | None) -> dict[str, int]:
    """Fill `sim` with owners and records drawn from `sim.rng`; the same seed, clock and
    arguments give the same data."""
    rng = sim.rng
    now = sim.now_ms()
    seed_owners(sim, owners)
    person_ids = [str(100 + i) for i in range(owners) if i != DEPARTED_INDEX]
    hs_stale = [HUBSPOT_ARCHIVED_OWNER] + (["109"] if owners > DEPARTED_INDEX else [])
    sf_valid = [sf_id("005", 100 + i) for i in range(owners) if i != DEPARTED_INDEX]
    sf_stale = [SALESFORCE_FORMER_USER] + ([sf_id("005", 109)] if owners > DEPARTED_INDEX else [])
    if not person_ids:
        person_ids, sf_valid = hs_stale, sf_stale

    used: set[str] = set()
    named = named_domains()
    orgs = [_company(rng, used, d) for d in named]
    orgs += [_company(rng, used) for _ in range(max(companies, accounts, 50))]
    # Named accounts lead both lists; the rest are shuffled so the CRMs differ in composition.
    generic = orgs[len(named):]

    def accountish(n: int) -> list[Company]:
        picked = orgs[:min(n, len(named))] + rng.sample(generic, max(0, n - len(named)))
        rng.shuffle(picked)
        return picked

    for org, (created, modified) in zip(accountish(companies),
                                        _timestamps(rng, companies, now, days), strict=True):
        sim.hubspot_create("companies", _hubspot_company(rng, org, person_ids, hs_stale),
                           created_ms=created, updated_ms=modified)
    for org, (created, modified) in zip(accountish(accounts),
                                        _timestamps(rng, accounts, now, days), strict=True):
        owner = _pick_owner(rng, sf_valid, sf_stale, None, (0.2, 0.08, 0.0))
        sim.salesforce_create("Account", _salesforce_account(rng, org, owner
                                                             or salesforce_default_owner),
                              created_ms=created, updated_ms=modified)
    for created, modified in _timestamps(rng, contacts, now, days):
        sim.hubspot_create("contacts", _hubspot_contact(rng, rng.choice(orgs), person_ids,
                                                        hs_stale),
                           created_ms=created, updated_ms=modified)
    for created, modified in _timestamps(rng, leads, now, days):
        owner = _pick_owner(rng, sf_valid, sf_stale, SALESFORCE_LEAD_QUEUE, (0.15, 0.07, 0.13))
        sim.salesforce_create("Lead", _salesforce_lead(rng, rng.choice(orgs), owner
                                                       or salesforce_default_owner),
                              created_ms=created, updated_ms=modified)
    for created, modified in _timestamps(rng, sf_contacts, now, days):
        owner = _pick_owner(rng, sf_valid, sf_stale, None, (0.25, 0.05, 0.0))
        sim.salesforce_create("Contact", _salesforce_contact(rng, rng.choice(orgs), owner
                                                             or salesforce_default_owner),
                              created_ms=created, updated_ms=modified)
    return {"hubspot_owners": owners + 2, "salesforce_users": owners + 2, "companies": companies,
            "contacts": contacts, "accounts": accounts, "leads": leads,
            "sf_contacts": sf_contacts}


def _website(rng: random.Random, domain: str) -> str | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.6:
        return f"https://www.{domain}"
    if roll < 0.8:
        return f"http://{domain}/"
    return f"www.{domain}"


def _hubspot_company(rng: random.Random, org: Company, persons: list[str],
                     stale: list[str]) -> dict[str, Any]:
    domain = org.domain if org.named or rng.random() > 0.05 else None
    if domain and not org.named and rng.random() < 0.05:
        domain = f"eu.{domain}"  # subsidiaries register a subdomain
    city, state, postal, country = org.place or (None, None, None, None)
    return {
        "name": org.name, "domain": domain, "website": _website(rng, org.domain),
        "industry": org.industry[0] if org.industry else None,
        "numberofemployees": org.employees, "annualrevenue": org.revenue,
        "country": country, "state": state, "city": city, "zip": postal,
        "hubspot_owner_id": _pick_owner(rng, persons, stale, HUBSPOT_QUEUE_OWNER,
                                         (0.18, 0.06, 0.04)),
        "lifecyclestage": rng.choice(["lead", "marketingqualifiedlead", "opportunity",
                                      "customer"]),
    }


def _hubspot_contact(rng: random.Random, org: Company, persons: list[str],
                     stale: list[str]) -> dict[str, Any]:
    free = rng.random() < 0.2
    first, last, email = _people(rng, rng.choice(_FREE_MAIL) if free else org.domain)
    city, state, postal, country = org.place or (None, None, None, None)
    employees = None
    if org.employees is not None:
        employees = next((label for top, label in _HS_EMPLOYEE_RANGES if org.employees <= top),
                         "1000+")
    return {
        "firstname": first, "lastname": last, "email": email, "company": org.name,
        "website": _website(rng, org.domain), "jobtitle": rng.choice(_TITLES),
        "industry": org.industry[0] if org.industry else None, "numemployees": employees,
        "annualrevenue": org.revenue, "country": country, "state": state, "city": city,
        "zip": postal, "hs_analytics_source": rng.choice(_HS_SOURCES),
        "hubspot_owner_id": _pick_owner(rng, persons, stale, HUBSPOT_QUEUE_OWNER,
                                         (0.18, 0.06, 0.04)),
        "lifecyclestage": "lead",
    }


def _salesforce_account(rng: random.Random, org: Company, owner: str | None) -> dict[str, Any]:
    city, state, postal, country = org.place or (None, None, None, None)
    return {
        "Name": org.name, "Website": _website(rng, org.domain),
        "Industry": org.industry[1] if org.industry else None,
        "NumberOfEmployees": org.employees,
        "AnnualRevenue": float(org.revenue) if org.revenue else None,
        "BillingCountry": country, "BillingState": state, "BillingCity": city,
        "BillingPostalCode": postal, "AccountSource": rng.choice(_SF_SOURCES + [None]),
        "Type": rng.choice(["Prospect", "Customer - Direct", "Customer - Channel", None]),
        "OwnerId": owner,
    }


def _salesforce_lead(rng: random.Random, org: Company, owner: str | None) -> dict[str, Any]:
    free = rng.random() < 0.2
    first, last, email = _people(rng, rng.choice(_FREE_MAIL) if free else org.domain)
    city, state, postal, country = org.place or (None, None, None, None)
    return {
        "FirstName": first, "LastName": last, "Company": org.name,
        "Email": email if rng.random() > 0.05 else None,
        "Website": _website(rng, org.domain), "Title": rng.choice(_TITLES),
        "Industry": org.industry[1] if org.industry else None,
        "NumberOfEmployees": org.employees,
        "AnnualRevenue": float(org.revenue) if org.revenue else None,
        "Country": country, "State": state, "City": city, "PostalCode": postal,
        "LeadSource": rng.choice(_SF_SOURCES), "Status": rng.choice(_LEAD_STATUS),
        "OwnerId": owner,
    }


def _salesforce_contact(rng: random.Random, org: Company, owner: str | None) -> dict[str, Any]:
    first, last, email = _people(rng, org.domain)
    city, state, postal, country = org.place or (None, None, None, None)
    return {
        "FirstName": first, "LastName": last, "Email": email, "Title": rng.choice(_TITLES),
        "MailingCountry": country, "MailingState": state, "MailingCity": city,
        "MailingPostalCode": postal, "LeadSource": rng.choice(_SF_SOURCES), "OwnerId": owner,
    }
