"""Redaction coverage on a generated corpus: 160+ secret formats, each planted in three contexts
(an assignment, prose, a URI or an HTTP header), and the share of them that the redactor removes.

Every value is made here by code, from each vendor's published token layout (prefix, alphabet,
length); nothing is taken from a scanner's rules. A planted secret counts as removed when no
10-character run of its random part is left in the redacted text, so keeping half a key counts
as a leak. `benchmarks/redaction_coverage.py` prints the same figures, and the false-positive
rate on real customer-support datasets.
"""

from __future__ import annotations

import base64
import random
import re
import string
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from workhorse.errors import DatasetNotFoundError
from workhorse.evals.datasets import load
from workhorse.privacy import redact

DIGITS = string.digits
HEX = "0123456789abcdef"
HEX_UPPER = HEX.upper()
LOWER = string.ascii_lowercase
LETTERS = string.ascii_letters
ALNUM = LETTERS + DIGITS
LOWER_ALNUM = LOWER + DIGITS
UPPER_ALNUM = string.ascii_uppercase + DIGITS
URLSAFE = ALNUM + "-_"
BASE64 = ALNUM + "+/"
BASE32 = string.ascii_uppercase + "234567"
BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
PRINTABLE = ALNUM + "!#$%^&*()-_=+@"

# A literal; or (alphabet, length), drawn at random and secret; or (alphabet, length, "id"), drawn at
# random but public, such as the account number inside a Slack or Telegram token.
Part = str | tuple[str, int] | tuple[str, int, str]


@dataclass(frozen=True)
class Format:
    name: str
    vendor: str  # as a person would name it in prose
    setting: str  # the usual name of the setting that holds it, after the vendor: "API_KEY"
    parts: tuple[Part, ...]
    # "token"; "url" (a webhook URL); "pem" (a multi-line private key, its label in `parts`); "basic"
    # (the base64 of "user:password", as sent in a Basic Authorization header)
    shape: str = "token"


def F(name: str, vendor: str, setting: str, *parts: Part, shape: str = "token") -> Format:
    return Format(name, vendor, setting, parts, shape)


def _uuid() -> tuple[Part, ...]:
    return ((HEX, 8), "-", (HEX, 4), "-4", (HEX, 3), "-a", (HEX, 3), "-", (HEX, 12))


FORMATS: tuple[Format, ...] = (
    # Cloud providers
    F("aws-access-key-id", "AWS", "ACCESS_KEY_ID", "AKIA", (BASE32, 16)),
    F("aws-temporary-key-id", "AWS", "ACCESS_KEY_ID", "ASIA", (BASE32, 16)),
    F("aws-secret-access-key", "AWS", "SECRET_ACCESS_KEY", (BASE64, 40)),
    F("aws-session-token", "AWS", "SESSION_TOKEN", "IQoJb3JpZ2luX2Vj", (BASE64, 240)),
    F("aws-bedrock-api-key", "Amazon Bedrock", "API_KEY", "ABSK", (BASE64, 108)),
    F("gcp-api-key", "Google Cloud", "API_KEY", "AIza", (URLSAFE, 35)),
    F("gcp-oauth-client-secret", "Google", "CLIENT_SECRET", "GOCSPX-", (URLSAFE, 28)),
    F("gcp-oauth-access-token", "Google", "ACCESS_TOKEN", "ya29.", (URLSAFE, 120)),
    F("gcp-oauth-refresh-token", "Google", "REFRESH_TOKEN", "1//0", (URLSAFE, 100)),
    F("azure-storage-key", "Azure Storage", "ACCOUNT_KEY", (BASE64, 86), "=="),
    F("azure-ad-client-secret", "Azure AD", "CLIENT_SECRET", (ALNUM, 3), (DIGITS, 1), "Q~", (URLSAFE, 34)),
    F("azure-devops-pat", "Azure DevOps", "PAT", (LOWER + "234567", 52)),
    F("azure-openai-key", "Azure OpenAI", "API_KEY", (HEX, 32)),
    F("alibaba-access-key-id", "Alibaba Cloud", "ACCESS_KEY_ID", "LTAI", (ALNUM, 20)),
    F("alibaba-access-key-secret", "Alibaba Cloud", "ACCESS_KEY_SECRET", (ALNUM, 30)),
    F("tencent-secret-id", "Tencent Cloud", "SECRET_ID", "AKID", (ALNUM, 32)),
    F("ibm-cloud-api-key", "IBM Cloud", "API_KEY", (URLSAFE, 44)),
    F("digitalocean-pat", "DigitalOcean", "TOKEN", "dop_v1_", (HEX, 64)),
    F("digitalocean-oauth", "DigitalOcean", "OAUTH_TOKEN", "doo_v1_", (HEX, 64)),
    F("digitalocean-refresh", "DigitalOcean", "REFRESH_TOKEN", "dor_v1_", (HEX, 64)),
    F("heroku-api-key", "Heroku", "API_KEY", "HRKU-AA", (URLSAFE, 58)),
    F("linode-token", "Linode", "TOKEN", (HEX, 64)),
    F("vultr-api-key", "Vultr", "API_KEY", (UPPER_ALNUM, 36)),
    F("hetzner-token", "Hetzner", "TOKEN", (ALNUM, 64)),
    F("scaleway-access-key", "Scaleway", "ACCESS_KEY", "SCW", (UPPER_ALNUM, 17)),
    F("cloudflare-api-token", "Cloudflare", "API_TOKEN", (URLSAFE, 40)),
    F("cloudflare-global-key", "Cloudflare", "API_KEY", (HEX, 37)),
    F("cloudflare-origin-ca-key", "Cloudflare", "ORIGIN_CA_KEY", "v1.0-", (HEX, 24), "-", (HEX, 146)),
    F("fastly-token", "Fastly", "API_TOKEN", (URLSAFE, 32)),
    F("akamai-client-secret", "Akamai", "CLIENT_SECRET", (BASE64, 43), "="),
    F("netlify-token", "Netlify", "AUTH_TOKEN", "nfp_", (ALNUM, 36)),
    F("vercel-token", "Vercel", "TOKEN", (ALNUM, 24)),
    F("render-api-key", "Render", "API_KEY", "rnd_", (ALNUM, 32)),
    F("flyio-token", "Fly.io", "API_TOKEN", "fo1_", (URLSAFE, 43)),
    F("supabase-pat", "Supabase", "ACCESS_TOKEN", "sbp_", (HEX, 40)),
    F("supabase-secret-key", "Supabase", "SECRET_KEY", "sb_secret_", (URLSAFE, 31)),
    F("planetscale-token", "PlanetScale", "TOKEN", "pscale_tkn_", (URLSAFE, 43)),
    F("planetscale-password", "PlanetScale", "PASSWORD", "pscale_pw_", (URLSAFE, 43)),
    F("planetscale-oauth", "PlanetScale", "OAUTH_TOKEN", "pscale_oauth_", (URLSAFE, 43)),
    F("databricks-token", "Databricks", "TOKEN", "dapi", (HEX, 32)),
    F("vault-service-token", "Vault", "TOKEN", "hvs.", (URLSAFE, 90)),
    F("vault-batch-token", "Vault", "TOKEN", "hvb.", (URLSAFE, 138)),
    F("terraform-cloud-token", "Terraform Cloud", "TOKEN", (ALNUM, 14), ".atlasv1.", (URLSAFE, 67)),
    F("pulumi-token", "Pulumi", "ACCESS_TOKEN", "pul-", (HEX, 40)),
    F("doppler-personal", "Doppler", "TOKEN", "dp.pt.", (ALNUM, 43)),
    F("doppler-service", "Doppler", "TOKEN", "dp.st.", (ALNUM, 43)),
    F("doppler-cli", "Doppler", "TOKEN", "dp.ct.", (ALNUM, 43)),
    F("doppler-scim", "Doppler", "TOKEN", "dp.scim.", (ALNUM, 43)),
    F("openshift-token", "OpenShift", "TOKEN", "sha256~", (URLSAFE, 43)),
    F("scalingo-token", "Scalingo", "API_TOKEN", "tk-us-", (URLSAFE, 48)),
    F("defined-networking", "Defined Networking", "API_TOKEN", "dnkey-", (UPPER_ALNUM, 26), "-", (UPPER_ALNUM, 52)),
    # Observability
    F("grafana-cloud", "Grafana Cloud", "API_KEY", "glc_", (BASE64, 80), "="),
    F("grafana-service-account", "Grafana", "SERVICE_ACCOUNT_TOKEN", "glsa_", (ALNUM, 32), "_", (HEX, 8)),
    F("newrelic-user-key", "New Relic", "API_KEY", "NRAK-", (UPPER_ALNUM, 27)),
    F("newrelic-browser-key", "New Relic", "BROWSER_KEY", "NRJS-", (HEX, 19)),
    F("newrelic-insert-key", "New Relic", "INSERT_KEY", "NRII-", (URLSAFE, 32)),
    F("datadog-api-key", "Datadog", "API_KEY", (HEX, 32)),
    F("datadog-app-key", "Datadog", "APP_KEY", (HEX, 40)),
    F("sentry-user-token", "Sentry", "AUTH_TOKEN", "sntryu_", (HEX, 64)),
    F("sentry-org-token", "Sentry", "AUTH_TOKEN", "sntrys_eyJpYXQiOjE3", (ALNUM, 150), "_", (URLSAFE, 43)),
    F("dynatrace-token", "Dynatrace", "API_TOKEN", "dt0c01.", (UPPER_ALNUM, 24), ".", (UPPER_ALNUM, 64)),
    F("pagerduty-key", "PagerDuty", "API_KEY", "u+", (URLSAFE, 18)),
    # Code hosting, CI and package registries
    F("github-pat", "GitHub", "TOKEN", "ghp_", (ALNUM, 36)),
    F("github-oauth", "GitHub", "OAUTH_TOKEN", "gho_", (ALNUM, 36)),
    F("github-user-to-server", "GitHub", "TOKEN", "ghu_", (ALNUM, 36)),
    F("github-server-to-server", "GitHub", "TOKEN", "ghs_", (ALNUM, 36)),
    F("github-refresh", "GitHub", "REFRESH_TOKEN", "ghr_", (ALNUM, 76)),
    F("github-fine-grained", "GitHub", "PAT", "github_pat_11", (UPPER_ALNUM, 20), "_", (ALNUM, 59)),
    F("gitlab-pat", "GitLab", "TOKEN", "glpat-", (URLSAFE, 20)),
    F("gitlab-trigger", "GitLab", "TRIGGER_TOKEN", "glptt-", (HEX, 40)),
    F("gitlab-runner-registration", "GitLab", "REGISTRATION_TOKEN", "GR1348941", (URLSAFE, 20)),
    F("gitlab-runner", "GitLab", "RUNNER_TOKEN", "glrt-", (URLSAFE, 20)),
    F("gitlab-deploy", "GitLab", "DEPLOY_TOKEN", "gldt-", (URLSAFE, 20)),
    F("gitlab-feed", "GitLab", "FEED_TOKEN", "glft-", (URLSAFE, 20)),
    F("gitlab-oauth-secret", "GitLab", "OAUTH_SECRET", "gloas-", (HEX, 64)),
    F("gitlab-job", "GitLab", "JOB_TOKEN", "glcbt-", (HEX, 2), "_", (URLSAFE, 20)),
    F("gitlab-incoming-mail", "GitLab", "INCOMING_MAIL_TOKEN", "glimt-", (LOWER_ALNUM, 25)),
    F("gitlab-agent", "GitLab", "AGENT_TOKEN", "glagent-", (URLSAFE, 50)),
    F("gitlab-scim", "GitLab", "SCIM_TOKEN", "glsoat-", (URLSAFE, 20)),
    F("bitbucket-app-password", "Bitbucket", "APP_PASSWORD", "ATBB", (ALNUM, 32)),
    F("atlassian-api-token", "Atlassian", "API_TOKEN", "ATATT3xFfGF0", (URLSAFE, 180), "=", (HEX_UPPER, 8)),
    F("npm-token", "npm", "TOKEN", "npm_", (ALNUM, 36)),
    F("pypi-token", "PyPI", "API_TOKEN", "pypi-AgEIcHlwaS5vcmc", (URLSAFE, 70)),
    F("rubygems-key", "RubyGems", "API_KEY", "rubygems_", (HEX, 48)),
    F("nuget-key", "NuGet", "API_KEY", "oy2", (LOWER_ALNUM, 43)),
    F("crates-token", "crates.io", "TOKEN", "cio", (ALNUM, 32)),
    F("dockerhub-pat", "Docker Hub", "PAT", "dckr_pat_", (URLSAFE, 27)),
    F("dockerhub-org-token", "Docker Hub", "TOKEN", "dckr_oat_", (URLSAFE, 32)),
    F("artifactory-api-key", "JFrog", "API_KEY", "AKCp", (ALNUM, 69)),
    F("artifactory-reference", "JFrog", "ACCESS_TOKEN", "cmVmdGtuOjAxOj", (ALNUM, 50)),
    F("clojars-token", "Clojars", "DEPLOY_TOKEN", "CLOJARS_", (LOWER_ALNUM, 60)),
    F("circleci-pat", "CircleCI", "TOKEN", "CCIPAT_", (ALNUM, 22), "_", (HEX, 40)),
    F("circleci-project", "CircleCI", "PROJECT_TOKEN", "CCIPRJ_", (ALNUM, 22), "_", (HEX, 40)),
    F("buildkite-token", "Buildkite", "API_TOKEN", "bkua_", (HEX, 40)),
    F("sonarqube-user", "SonarQube", "TOKEN", "squ_", (HEX, 40)),
    F("sonarqube-project", "SonarQube", "TOKEN", "sqp_", (HEX, 40)),
    F("sonarqube-global", "SonarQube", "TOKEN", "sqa_", (HEX, 40)),
    F("sourcegraph-token", "Sourcegraph", "ACCESS_TOKEN", "sgp_", (HEX, 40)),
    F("harness-pat", "Harness", "PAT", "pat.", (ALNUM, 22), ".", (HEX, 24), ".", (ALNUM, 20)),
    F("infracost-key", "Infracost", "API_KEY", "ico-", (ALNUM, 32)),
    F("prefect-key", "Prefect", "API_KEY", "pnu_", (ALNUM, 36)),
    F("readme-key", "ReadMe", "API_KEY", "rdme_", (LOWER_ALNUM, 70)),
    F("postman-key", "Postman", "API_KEY", "PMAK-", (HEX, 24), "-", (HEX, 34)),
    F("postman-collection", "Postman", "ACCESS_KEY", "PMAT-", (UPPER_ALNUM, 26)),
    F("ngrok-authtoken", "ngrok", "AUTHTOKEN", "2", (ALNUM, 26), "_", (ALNUM, 21)),
    # Work tools
    F("linear-key", "Linear", "API_KEY", "lin_api_", (ALNUM, 40)),
    F("linear-oauth", "Linear", "OAUTH_TOKEN", "lin_oauth_", (HEX, 64)),
    F("notion-secret", "Notion", "SECRET", "secret_", (ALNUM, 43)),
    F("notion-token", "Notion", "TOKEN", "ntn_", (DIGITS, 11), (ALNUM, 35)),
    F("asana-pat", "Asana", "PAT", "2/", (DIGITS, 16, "id"), "/", (DIGITS, 16, "id"), ":", (HEX, 32)),
    F("clickup-token", "ClickUp", "API_TOKEN", "pk_", (DIGITS, 8, "id"), "_", (UPPER_ALNUM, 32)),
    F("airtable-pat", "Airtable", "TOKEN", "pat", (ALNUM, 14), ".", (HEX, 64)),
    F("figma-token", "Figma", "TOKEN", "figd_", (URLSAFE, 40)),
    F("contentful-token", "Contentful", "TOKEN", "CFPAT-", (URLSAFE, 43)),
    F("typeform-token", "Typeform", "TOKEN", "tfp_", (URLSAFE, 44), "_", (URLSAFE, 14)),
    F("hubspot-token", "HubSpot", "ACCESS_TOKEN", "pat-na1-", *_uuid()),
    F("okta-token", "Okta", "API_TOKEN", "00", (URLSAFE, 40)),
    F("onepassword-service", "1Password", "SERVICE_ACCOUNT_TOKEN", "ops_eyJ", (URLSAFE, 250)),
    F(
        "onepassword-secret-key", "1Password", "SECRET_KEY",
        "A3-", (UPPER_ALNUM, 6), "-", (UPPER_ALNUM, 6), "-", (UPPER_ALNUM, 5), "-", (UPPER_ALNUM, 5), "-",
        (UPPER_ALNUM, 5), "-", (UPPER_ALNUM, 5),
    ),
    F("zendesk-token", "Zendesk", "API_TOKEN", (ALNUM, 40)),
    F("frameio-token", "Frame.io", "TOKEN", "fio-u-", (URLSAFE, 64)),
    F("adafruit-key", "Adafruit IO", "KEY", "aio_", (ALNUM, 28)),
    # Messaging
    F("slack-bot", "Slack", "BOT_TOKEN", "xoxb-", (DIGITS, 12, "id"), "-", (DIGITS, 13, "id"), "-", (ALNUM, 24)),
    F("slack-user", "Slack", "USER_TOKEN", "xoxp-", (DIGITS, 12, "id"), "-", (DIGITS, 12, "id"), "-", (DIGITS, 13, "id"), "-", (HEX, 32)),
    F("slack-app", "Slack", "APP_TOKEN", "xapp-1-A", (UPPER_ALNUM, 10, "id"), "-", (DIGITS, 13, "id"), "-", (HEX, 64)),
    F("slack-config-access", "Slack", "CONFIG_TOKEN", "xoxe.xoxp-1-", (ALNUM, 163)),
    F("slack-config-refresh", "Slack", "REFRESH_TOKEN", "xoxe-1-", (ALNUM, 146)),
    F(
        "slack-webhook", "Slack", "WEBHOOK_URL",
        "https://hooks.slack.com/services/T", (UPPER_ALNUM, 10, "id"), "/B", (UPPER_ALNUM, 10, "id"), "/", (ALNUM, 24), shape="url",
    ),
    F(
        "discord-webhook", "Discord", "WEBHOOK_URL",
        "https://discord.com/api/webhooks/", (DIGITS, 18, "id"), "/", (URLSAFE, 68), shape="url",
    ),
    F("discord-bot", "Discord", "BOT_TOKEN", "MT", (ALNUM, 24), ".", (URLSAFE, 6), ".", (URLSAFE, 38)),
    F("discord-client-secret", "Discord", "CLIENT_SECRET", (URLSAFE, 32)),
    F("telegram-bot", "Telegram", "BOT_TOKEN", (DIGITS, 10, "id"), ":AA", (URLSAFE, 33)),
    F("twilio-api-key", "Twilio", "API_KEY", "SK", (HEX, 32)),
    F("twilio-auth-token", "Twilio", "AUTH_TOKEN", (HEX, 32)),
    F("sendgrid-key", "SendGrid", "API_KEY", "SG.", (URLSAFE, 22), ".", (URLSAFE, 43)),
    F("mailgun-key", "Mailgun", "API_KEY", "key-", (HEX, 32)),
    F("mailgun-private-key", "Mailgun", "API_KEY", (HEX, 32), "-", (HEX, 8), "-", (HEX, 8)),
    F("mailchimp-key", "Mailchimp", "API_KEY", (HEX, 32), "-us", (DIGITS, 2)),
    F("brevo-key", "Brevo", "API_KEY", "xkeysib-", (HEX, 64), "-", (ALNUM, 16)),
    F("resend-key", "Resend", "API_KEY", "re_", (ALNUM, 8), "_", (ALNUM, 24)),
    F("mandrill-key", "Mandrill", "API_KEY", "md-", (URLSAFE, 22)),
    # Payments and commerce
    F("stripe-secret", "Stripe", "SECRET_KEY", "sk_live_", (ALNUM, 24)),
    F("stripe-restricted", "Stripe", "RESTRICTED_KEY", "rk_live_", (ALNUM, 24)),
    F("stripe-test", "Stripe", "SECRET_KEY", "sk_test_", (ALNUM, 24)),
    F("stripe-webhook", "Stripe", "WEBHOOK_SECRET", "whsec_", (ALNUM, 32)),
    F("square-access", "Square", "ACCESS_TOKEN", "EAAA", (URLSAFE, 60)),
    F("square-secret", "Square", "APPLICATION_SECRET", "sq0csp-", (URLSAFE, 43)),
    F("square-legacy", "Square", "ACCESS_TOKEN", "sq0atp-", (URLSAFE, 22)),
    F("braintree-token", "Braintree", "ACCESS_TOKEN", "access_token$production$", (LOWER_ALNUM, 16, "id"), "$", (HEX, 32)),
    F("shopify-access", "Shopify", "ACCESS_TOKEN", "shpat_", (HEX, 32)),
    F("shopify-custom-app", "Shopify", "ACCESS_TOKEN", "shpca_", (HEX, 32)),
    F("shopify-private-app", "Shopify", "PASSWORD", "shppa_", (HEX, 32)),
    F("shopify-shared-secret", "Shopify", "SHARED_SECRET", "shpss_", (HEX, 32)),
    F("flutterwave-secret", "Flutterwave", "SECRET_KEY", "FLWSECK-", (HEX, 32), "-X"),
    F("razorpay-key", "Razorpay", "KEY_ID", "rzp_live_", (ALNUM, 14)),
    F("paystack-secret", "Paystack", "SECRET_KEY", "sk_live_", (HEX, 40)),
    F("shippo-token", "Shippo", "API_TOKEN", "shippo_live_", (HEX, 40)),
    F("easypost-key", "EasyPost", "API_KEY", "EZAK", (ALNUM, 54)),
    F("plaid-access", "Plaid", "ACCESS_TOKEN", "access-production-", *_uuid()),
    F("duffel-token", "Duffel", "ACCESS_TOKEN", "duffel_live_", (URLSAFE, 43)),
    F("lob-key", "Lob", "API_KEY", "live_", (HEX, 35)),
    # AI providers
    F("openai-project", "OpenAI", "API_KEY", "sk-proj-", (URLSAFE, 156)),
    F("openai-service-account", "OpenAI", "API_KEY", "sk-svcacct-", (URLSAFE, 156)),
    F("openai-legacy", "OpenAI", "API_KEY", "sk-", (ALNUM, 20), "T3BlbkFJ", (ALNUM, 20)),
    F("openai-admin", "OpenAI", "ADMIN_KEY", "sk-admin-", (URLSAFE, 156)),
    F("anthropic-key", "Anthropic", "API_KEY", "sk-ant-api03-", (URLSAFE, 93), "AA"),
    F("anthropic-admin", "Anthropic", "ADMIN_KEY", "sk-ant-admin01-", (URLSAFE, 93), "AA"),
    F("huggingface-token", "Hugging Face", "TOKEN", "hf_", (LETTERS, 34)),
    F("huggingface-org", "Hugging Face", "TOKEN", "api_org_", (LETTERS, 34)),
    F("groq-key", "Groq", "API_KEY", "gsk_", (ALNUM, 52)),
    F("replicate-token", "Replicate", "API_TOKEN", "r8_", (ALNUM, 37)),
    F("perplexity-key", "Perplexity", "API_KEY", "pplx-", (ALNUM, 48)),
    F("xai-key", "xAI", "API_KEY", "xai-", (ALNUM, 80)),
    F("openrouter-key", "OpenRouter", "API_KEY", "sk-or-v1-", (HEX, 64)),
    F("deepseek-key", "DeepSeek", "API_KEY", "sk-", (HEX, 32)),
    F("cohere-key", "Cohere", "API_KEY", (ALNUM, 40)),
    F("mistral-key", "Mistral", "API_KEY", (ALNUM, 32)),
    F("langsmith-pat", "LangSmith", "API_KEY", "lsv2_pt_", (HEX, 32), "_", (HEX, 10)),
    F("langsmith-service", "LangSmith", "API_KEY", "lsv2_sk_", (HEX, 32), "_", (HEX, 10)),
    F("pinecone-key", "Pinecone", "API_KEY", "pcsk_", (ALNUM, 5), "_", (ALNUM, 63)),
    F("elevenlabs-key", "ElevenLabs", "API_KEY", "sk_", (HEX, 48)),
    F("tavily-key", "Tavily", "API_KEY", "tvly-", (ALNUM, 32)),
    F("firecrawl-key", "Firecrawl", "API_KEY", "fc-", (HEX, 32)),
    F("nvidia-key", "NVIDIA", "API_KEY", "nvapi-", (URLSAFE, 64)),
    F("cerebras-key", "Cerebras", "API_KEY", "csk-", (LOWER_ALNUM, 48)),
    F("fireworks-key", "Fireworks", "API_KEY", "fw_", (ALNUM, 24)),
    F("assemblyai-key", "AssemblyAI", "API_KEY", (HEX, 32)),
    F("deepgram-key", "Deepgram", "API_KEY", (HEX, 40)),
    F("wandb-key", "Weights & Biases", "API_KEY", (HEX, 40)),
    # Social and media
    F("facebook-token", "Facebook", "ACCESS_TOKEN", "EAAB", (ALNUM, 180)),
    F("facebook-app-secret", "Facebook", "APP_SECRET", (HEX, 32)),
    F("twitter-bearer", "Twitter", "BEARER_TOKEN", "AAAAAAAAAAAAAAAAAAAAA", (ALNUM, 25), "%3D", (ALNUM, 50)),
    F("twitter-api-secret", "Twitter", "API_SECRET", (ALNUM, 50)),
    F("twitch-token", "Twitch", "OAUTH_TOKEN", (LOWER_ALNUM, 30)),
    F("dropbox-token", "Dropbox", "ACCESS_TOKEN", "sl.", (URLSAFE, 135)),
    F("dropbox-user-token", "Dropbox", "ACCESS_TOKEN", "sl.u.", (URLSAFE, 135)),
    F("mapbox-secret", "Mapbox", "SECRET_TOKEN", "sk.eyJ1Ijoi", (ALNUM, 20), "IiwiYSI6Ij", (ALNUM, 20), ".", (URLSAFE, 22)),
    F("mapbox-public", "Mapbox", "ACCESS_TOKEN", "pk.eyJ1Ijoi", (ALNUM, 20), "IiwiYSI6Ij", (ALNUM, 20), ".", (URLSAFE, 22)),
    F("algolia-admin-key", "Algolia", "ADMIN_API_KEY", (HEX, 32)),
    F("launchdarkly-sdk", "LaunchDarkly", "SDK_KEY", "sdk-", *_uuid()),
    F("launchdarkly-api", "LaunchDarkly", "API_KEY", "api-", *_uuid()),
    # Tokens and keys of no one vendor
    F("jwt-hs256", "Keycloak", "ID_TOKEN", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", (URLSAFE, 80), ".", (URLSAFE, 43)),
    F(
        "jwt-kubernetes", "Kubernetes", "SERVICE_ACCOUNT_TOKEN",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6Ij", (URLSAFE, 20), "In0.", (URLSAFE, 300), ".", (URLSAFE, 342),
    ),
    F("age-secret-key", "age", "SECRET_KEY", "AGE-SECRET-KEY-1", (BECH32, 58)),
    F("bitcoin-wif", "Bitcoin wallet", "PRIVATE_KEY", "5K", (BASE58, 49)),
    F("ethereum-private-key", "Ethereum wallet", "PRIVATE_KEY", "0x", (HEX, 64)),
    F("rails-secret-key-base", "Rails", "SECRET_KEY_BASE", (HEX, 128)),
    F("django-secret-key", "Django", "SECRET_KEY", "django-insecure-", (PRINTABLE, 50)),
    F("laravel-app-key", "Laravel", "APP_KEY", "base64:", (BASE64, 43), "="),
    F("flask-secret-key", "Flask", "SECRET_KEY", (HEX, 64)),
    F("jwt-signing-secret", "auth service", "JWT_SECRET", (ALNUM, 64)),
    F("encryption-key", "backup tool", "ENCRYPTION_KEY", (BASE64, 43), "="),
    F("webhook-secret", "GitHub", "WEBHOOK_SECRET", (HEX, 64)),
    F("totp-seed", "2FA app", "TOTP_SECRET", (BASE32, 32)),
    F("session-cookie", "web app", "SESSION_ID", (LOWER_ALNUM, 32)),
    F("express-session", "Express", "SESSION_COOKIE", "s%3A", (URLSAFE, 32), ".", (BASE64, 43)),
    F("strong-password", "database", "PASSWORD", (PRINTABLE, 16)),
    F("basic-auth", "API gateway", "BASIC_AUTH", shape="basic"),  # base64 of user:password, see `_draw`
    F("pem-rsa", "server", "PRIVATE_KEY", "RSA PRIVATE KEY", shape="pem"),
    F("pem-ec", "server", "PRIVATE_KEY", "EC PRIVATE KEY", shape="pem"),
    F("pem-pkcs8", "service account", "PRIVATE_KEY", "PRIVATE KEY", shape="pem"),
    F("pem-encrypted", "server", "PRIVATE_KEY", "ENCRYPTED PRIVATE KEY", shape="pem"),
    F("pem-openssh", "deploy user", "SSH_KEY", "OPENSSH PRIVATE KEY", shape="pem"),
    F("pem-dsa", "legacy host", "PRIVATE_KEY", "DSA PRIVATE KEY", shape="pem"),
    F("pem-pgp", "release signer", "SIGNING_KEY", "PGP PRIVATE KEY BLOCK", shape="pem"),
)

CONTEXTS = ("assignment", "prose", "uri_header")


@dataclass
class Planted:
    format: str
    context: str
    text: str
    secrets: list[str]  # the random parts, as written in the text


def _draw(rng: random.Random, fmt: Format) -> tuple[str, list[str]]:
    """A value of the format and its random parts."""
    if fmt.shape == "pem":
        lines = [_chars(rng, BASE64, 64) for _ in range(rng.randint(4, 8))] + [_chars(rng, BASE64, 40) + "=="]
        return f"-----BEGIN {fmt.parts[0]}-----\n" + "\n".join(lines) + f"\n-----END {fmt.parts[0]}-----", lines
    if fmt.shape == "basic":
        password = _chars(rng, ALNUM, 14)
        encoded = base64.b64encode(f"{rng.choice(['admin', 'svc', 'deploy'])}:{password}".encode()).decode()
        return encoded, [encoded]
    pieces: list[str] = []
    secrets: list[str] = []
    for part in fmt.parts:
        if isinstance(part, str):
            pieces.append(part)
        else:
            drawn = _chars(rng, part[0], part[1])
            pieces.append(drawn)
            if len(part) == 2:
                secrets.append(drawn)
    return "".join(pieces), secrets


def _chars(rng: random.Random, alphabet: str, count: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(count))


def _setting(fmt: Format, style: int) -> str:
    """The setting's name in the style of an env file, JSON, YAML or a shell export."""
    words = re.findall(r"[A-Za-z0-9]+", fmt.vendor.replace("&", "")) + fmt.setting.split("_")
    if style == 1:  # camelCase
        return words[0].lower() + "".join(word.capitalize() for word in words[1:])
    if style == 2:  # snake_case
        return "_".join(word.lower() for word in words)
    return "_".join(word.upper() for word in words)


PROSE = (
    "I pasted {v} into the {vendor} settings and it still fails, any idea?",
    "Here is what {vendor} gave me: {v}. Can you check why it is rejected?",
    "{vendor} 返回的凭证是 {v} ，请帮我看看为什么报错",
    "the old {vendor} credential {v} was leaked in a screenshot yesterday",
)
SCHEMES = ("postgres", "redis", "amqp", "mongodb+srv", "mysql", "smtp", "ftp", "ldap")


def _in_context(rng: random.Random, fmt: Format, context: str, index: int) -> Planted:
    value, secrets = _draw(rng, fmt)
    text = _write(rng, fmt, context, index, value)
    if "%" in text and value not in text:  # percent-encoded in a URI: look for the parts as encoded
        secrets = [quote(secret, safe="") for secret in secrets]
    return Planted(fmt.name, context, text, secrets)


def _write(rng: random.Random, fmt: Format, context: str, index: int, value: str) -> str:
    escaped = value.replace("\n", "\\n")
    if context == "assignment":
        style = index % 4
        name = _setting(fmt, style)
        if fmt.shape == "pem" or style == 3:
            return f'export {name}="{escaped}"'
        if style == 1:
            return f'{{"{name}": "{value}", "region": "eu-west-1"}}'
        if style == 2:
            return f"{name}: {value}\ntimeout: 30"
        return f"{name}={value}"
    if context == "prose":
        if fmt.shape == "pem":
            return f"Here is the {fmt.vendor} key, keep it safe:\n{value}\nthanks"
        return PROSE[index % len(PROSE)].format(v=value, vendor=fmt.vendor)
    if fmt.shape == "pem":
        return f'{{"type": "service_account", "private_key": "{escaped}\\n"}}'
    if fmt.shape == "url":
        return f"curl -X POST -d @payload.json {value}"
    vendor = re.sub(r"[^A-Za-z0-9]", "", fmt.vendor) or "Api"
    style = index % 4
    if style == 0:
        return f'curl -H "Authorization: Bearer {value}" https://api.example.com/v1/me'
    if style == 1:
        return f'curl -H "X-{vendor}-Key: {value}" https://api.example.com/v1/me'
    if style == 2:
        scheme = SCHEMES[index % len(SCHEMES)]
        return f"{scheme}://svc_{vendor.lower()}:{quote(value, safe='')}@db.internal.example:5432/main"
    parameter = rng.choice(["token", "key", "auth", "sig"])
    return f"wss://stream.example.com/socket?{parameter}={quote(value, safe='')}&v=2"


def secret_corpus(seed: int = 0) -> list[Planted]:
    """Every format in every context."""
    rng = random.Random(seed)
    return [_in_context(rng, fmt, context, index) for index, fmt in enumerate(FORMATS) for context in CONTEXTS]


WINDOW = 10


def leaked(planted: Planted, redacted: str) -> list[str]:
    """The runs of a planted secret's random parts still in the redacted text."""
    runs = []
    for secret in planted.secrets:
        if len(secret) < 5:  # too short to give anything away ("Q~" secrets have a 34-character part too)
            continue
        width = min(WINDOW, len(secret))
        runs += [secret[i : i + width] for i in range(len(secret) - width + 1) if secret[i : i + width] in redacted]
    return runs


def recall(corpus: list[Planted]) -> tuple[float, list[tuple[Planted, str]]]:
    misses = []
    for planted in corpus:
        result = redact(planted.text)
        if leaked(planted, result.text):
            misses.append((planted, result.text))
    return 1 - len(misses) / len(corpus), misses


CORPUS = secret_corpus()


def test_corpus_is_large_and_every_secret_is_planted() -> None:
    assert len(FORMATS) >= 150 and len({fmt.name for fmt in FORMATS}) == len(FORMATS)
    assert len(CORPUS) == 3 * len(FORMATS)
    for planted in CORPUS:
        assert planted.secrets and all(secret in planted.text for secret in planted.secrets), planted
        assert max(map(len, planted.secrets)) >= 5, planted


def test_at_least_99_percent_of_planted_secrets_are_removed() -> None:
    share, misses = recall(CORPUS)
    listed = "\n".join(f"{p.format} / {p.context}: {redacted!r}" for p, redacted in misses)
    assert share >= 0.99, f"{share:.2%} removed; missed:\n{listed}"


@pytest.mark.parametrize("planted", CORPUS[::7], ids=lambda p: f"{p.format}-{p.context}")
def test_placeholders_restore_the_text(planted: Planted) -> None:
    result = redact(planted.text)
    assert result.restore(result.text) == planted.text


# --- Real customer-support texts: how many does redaction change? ------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["banking77:test", "bitext_cs:test"])
def test_few_support_texts_are_changed(dataset: str) -> None:
    try:
        texts = [example.text for example in load(dataset).examples]
    except DatasetNotFoundError as missing:
        pytest.skip(missing.message)
    changed = [text for text in texts if redact(text).text != text]
    assert len(changed) <= 0.01 * len(texts), changed[:20]
