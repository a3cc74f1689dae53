"""The settings of the built-in connectors on top of the core's (docs/operations.md#settings).

The core's `config.settings.Settings` names no CRM: a connector's credentials and base URLs
belong to the connector. This class adds the built-ins' to it, under the variable names the
contract fixes; the entry layer (tasks/) reads these. A third-party connector reads its own
environment (its own pydantic settings) and is handed this object like every factory.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from config.settings import Settings as CoreSettings


class Settings(CoreSettings):
    """Read fresh where needed (`Settings()`), never held in a module global."""

    # Vendor settings keep the vendors' conventional names (docs/operations.md#settings), so no
    # prefix.
    hubspot_access_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUBSPOT_ACCESS_TOKEN"))
    hubspot_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUBSPOT_WEBHOOK_SECRET"))
    hubspot_base_url: str = "https://api.hubapi.com"  # ACCOUNT_ROUTER_HUBSPOT_BASE_URL
    # The HubSpot account (portal) id: the dashboard links records to their HubSpot page with it.
    hubspot_portal_id: str | None = Field(
        default=None, validation_alias=AliasChoices("HUBSPOT_PORTAL_ID"), pattern=r"^\d{1,20}$")
    # Calls per 10 s this app may spend on one HubSpot account (burst limit 100-250 per 10 s).
    hubspot_calls_per_10s: float = Field(default=90.0, gt=0)
    salesforce_instance_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_INSTANCE_URL"))
    salesforce_access_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_ACCESS_TOKEN"))
    salesforce_username: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_USERNAME"))
    salesforce_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_PASSWORD"))
    salesforce_security_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_SECURITY_TOKEN"))
    salesforce_domain: str = Field(
        default="login", validation_alias=AliasChoices("SALESFORCE_DOMAIN"))
    salesforce_consumer_key: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_CONSUMER_KEY"))
    salesforce_private_key_file: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_PRIVATE_KEY_FILE"))
    salesforce_api_version: str = Field(
        default="62.0", validation_alias=AliasChoices("SALESFORCE_API_VERSION"))
    salesforce_calls_per_second: float = Field(default=20.0, gt=0)
    csv_input: str | None = None  # ACCOUNT_ROUTER_CSV_INPUT: the file the csv connector routes
    csv_output: str | None = None  # ACCOUNT_ROUTER_CSV_OUTPUT: where its owners are written
    # Outbound Messages (docs/operations.md#post-webhookssalesforcesecret): the org that may call
    # us, and the secret path segment of the endpoint URL Salesforce is given (the endpoint is off
    # without it).
    salesforce_org_id: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_ORG_ID"))
    salesforce_webhook_secret: SecretStr | None = None  # ACCOUNT_ROUTER_SALESFORCE_WEBHOOK_SECRET
    # TLS trust (docs/operations.md#tls): the conventional variables, read here like every other
    # setting. requests honours REQUESTS_CA_BUNDLE itself; the HubSpot client (urllib3) and the
    # Salesforce session take these from the connector factories.
    requests_ca_bundle: str | None = Field(
        default=None, validation_alias=AliasChoices("REQUESTS_CA_BUNDLE"))
    ssl_cert_file: str | None = Field(
        default=None, validation_alias=AliasChoices("SSL_CERT_FILE"))
