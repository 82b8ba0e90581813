from __future__ import annotations

import pytest

from audit.corpus import Sample
from audit.detectors import (
    Detector,
    build_detectors,
    detector_names,
    locate,
    scoped_settings,
    select_detectors,
)
from audit.errors import InputError
from audit.findings import Finding
from audit.scan import scan_samples, scanner_for
from tests.audit.fakes import FAKES

# One example per registered detector: (line, language, the secret in it).
EXAMPLES: dict[str, tuple[str, str | None, str]] = {
    "ArtifactoryDetector": ('ART = "{artifactory}"', "python", "artifactory"),
    "AWSKeyDetector": ('key_id = "{aws_id}"', "python", "aws_id"),
    "AWSSecretKeyDetector": ("AWS_SECRET_ACCESS_KEY={aws_secret}", "dotenv", "aws_secret"),
    "AnthropicKeyDetector": ('client = Anthropic(api_key="{anthropic}")', "python", "anthropic"),
    "AzureStorageKeyDetector": (
        'conn = "AccountName=x;AccountKey={azure};EndpointSuffix=core.windows.net"',
        "python",
        "azure",
    ),
    "Base64HighEntropyString": ('blob = "{b64}"', "python", "b64"),
    "BasicAuthDetector": (
        'url = "https://deploy:{url_password}@git.host.io/r"',
        None,
        "url_password",
    ),
    "CloudantDetector": ('cloudant_password = "{cloudant}"', "python", "cloudant"),
    "ConnectionStringDetector": (
        'dsn = "postgresql://app:{url_password}@db.corp.io:5432/app"',
        "python",
        "url_password",
    ),
    "DatabricksTokenDetector": ('DATABRICKS = "{databricks}"', "python", "databricks"),
    "DigitalOceanTokenDetector": ("export DO={digitalocean}", "bash", "digitalocean"),
    "DiscordBotTokenDetector": ('bot.run("{discord}")', "python", "discord"),
    "EmailDetector": ("# Maintainer: {email}", "python", "email"),
    "GitHubFineGrainedTokenDetector": ("token: {github_pat}", "yaml", "github_pat"),
    "GitHubTokenDetector": ('gh = Github("{github}")', "python", "github"),
    "GitLabTokenDetector": ("GITLAB={gitlab}", "dotenv", "gitlab"),
    "GoogleApiKeyDetector": ('const key = "{google}";', "javascript", "google"),
    "GoogleOAuthSecretDetector": ('"client_secret": "{google_oauth}",', "json", "google_oauth"),
    "HexHighEntropyString": ("seed = '{hex}'", "python", "hex"),
    "HuggingFaceTokenDetector": ('login(token="{hf}")', "python", "hf"),
    "IPAddressDetector": ("server = {ipv4}", "ini", "ipv4"),
    "IbmCloudIamDetector": ('ibm_cloud_iam_api_key = "{ibm_iam}"', "python", "ibm_iam"),
    "IbmCosHmacDetector": ('cos_hmac_secret_access_key = "{ibm_cos}"', "python", "ibm_cos"),
    "JwtDetector": ("Authorization: Bearer {jwt}", None, "jwt"),
    "KeywordAssignmentDetector": ('export API_TOKEN="{password}"', "bash", "password"),
    "KeywordDetector": ('password = "{password}"', "python", "password"),
    "MailchimpDetector": ('MC = "{mailchimp}"', "python", "mailchimp"),
    "NpmDetector": ("//registry.npmjs.org/:_authToken={npm}", None, "npm"),
    "NpmTokenDetector": ("NPM_TOKEN: {npm}", "yaml", "npm"),
    "OpenAIDetector": ('openai.api_key = "{openai_legacy}"', "python", "openai_legacy"),
    "OpenAIProjectKeyDetector": ("OPENAI_API_KEY={openai}", "dotenv", "openai"),
    "PostmanKeyDetector": ('headers["X-Api-Key"] = "{postman}"', "python", "postman"),
    "PrivateKeyBlockDetector": ('KEY = """{pem}"""', "python", "pem"),
    "PypiTokenDetector": ("password = {pypi}", "ini", "pypi"),
    "SendGridDetector": ('sg = SendGridAPIClient("{sendgrid}")', "python", "sendgrid"),
    "ShopifyTokenDetector": ('"X-Shopify-Access-Token": "{shopify}"', "json", "shopify"),
    "SlackDetector": ('SLACK = "{slack_lower}"', "python", "slack_lower"),
    "SlackTokenDetector": ("slack_bot: {slack}", "yaml", "slack"),
    "SoftlayerDetector": ('softlayer_api_key = "{softlayer}"', "python", "softlayer"),
    "SquareOAuthDetector": ('SQUARE = "{square}"', "python", "square"),
    "StripeDetector": ('stripe.api_key = "{stripe24}"', "python", "stripe24"),
    "StripeKeyDetector": ('stripe.api_key = "{stripe}"', "python", "stripe"),
    "TelegramBotTokenDetector": ('bot = Bot("{telegram}")', "python", "telegram"),
    "TwilioKeyDetector": ('TWILIO = "{twilio}"', "python", "twilio"),
}


def _example(name: str) -> tuple[str, str | None, str]:
    template, language, key = EXAMPLES[name]
    return template.format(**FAKES), language, FAKES[key]


def _findings(line: str, language: str | None, origin: str = "sample.txt") -> list[Finding]:
    sample = Sample(id=origin, origin=origin, text=line, language=language)
    return list(scan_samples([sample])[0].findings)


def test_every_detector_has_an_example() -> None:
    assert sorted(EXAMPLES) == detector_names()


@pytest.mark.parametrize("detector", build_detectors(), ids=lambda d: d.name)
def test_detector_contract(detector: Detector) -> None:
    """Every detector reports its example's exact span, and its hints select that line."""
    line, language, secret = _example(detector.name)
    start = line.index(secret)
    assert detector.secret_type
    assert detector.priority in (1, 2, 3)
    assert detector.keywords or detector.triggers, "a detector without hints never runs"
    with scoped_settings():
        spans = set(detector.spans(line, "sample.txt", language))
    assert (start, start + len(secret)) in spans
    scanner = scanner_for(None)
    if not detector.multiline:
        hits = scanner._candidate_lines(line.lower())
        assert detector in hits.get(line.rfind("\n", 0, start) + 1, {})


@pytest.mark.parametrize("name", detector_names())
def test_example_survives_the_whole_scan(name: str) -> None:
    """Through prefilter, filters, context and overlap resolution, the secret is found."""
    line, language, secret = _example(name)
    start = line.index(secret)
    spans = {(f.start, f.end) for f in _findings(line, language)}
    assert (start, start + len(secret)) in spans


@pytest.mark.parametrize(
    "detector",
    [d for d in build_detectors() if d.plugin.__module__ == "audit.detectors"],
    ids=lambda d: d.name,
)
def test_own_plugins_work_inside_detect_secrets(detector: Detector) -> None:
    """Our plugins are detect-secrets plugins: analyze_string yields the secret itself."""
    line, _, secret = _example(detector.name)
    with scoped_settings():
        values = set(detector.plugin.analyze_string(line))
    if detector.multiline:
        values = {line[s:e] for s, e in detector.spans(line, "x", None)}
    assert secret in values


# (line, language, fake key or None, expected type or None): should it be flagged?
CASES: list[tuple[str, str | None, str | None, str | None]] = [
    # detect-secrets' GitHub plugin reports only "ghp": the span is the whole token
    ('t = "{github}"', "python", "github", "GitHub Token"),
    ('t = "ghp_short"', "python", None, None),
    # its Stripe pattern stops after 24 characters; ours takes the whole key
    ('k = "{stripe}"', "python", "stripe", "Stripe Access Key"),
    # its Slack pattern stops at the first upper-case letter
    ("SLACK_TOKEN={slack}", "dotenv", "slack", "Slack Token"),
    # its private-key plugin reports the header: the span is the whole block
    ("{pem}", None, "pem", "Private Key"),
    ("-----BEGIN RSA PRIVATE KEY----- is the header", None, None, None),
    # an unterminated block runs to the end of its body
    ("{pem_open}", None, "pem_open", "Private Key"),
    # its JWT span stops before the signature
    ('jwt = "{jwt}"', "python", "jwt", "JSON Web Token"),
    ("eyJhbGciOi.eyJzdWIiOi.abc", None, None, None),
    # npm tokens anywhere, not only in .npmrc
    ('npm_token: "{npm}"', "yaml", "npm", "NPM tokens"),
    # keyword assignments: .env, YAML and shell need no quotes; code does
    ("PASSWORD={password}", "dotenv", "password", "Secret Keyword"),
    ("  password: {password}", "yaml", "password", "Secret Keyword"),
    ('export API_TOKEN="{password}"', "bash", "password", "Secret Keyword"),
    ("password = get_password()", "python", None, None),
    ("password: str = '{password}'", "python", "password", "Secret Keyword"),
    ('<?php $db_password = "{password}";', "php", "password", "Secret Keyword"),
    ('String password = "{password}";', "java", "password", "Secret Keyword"),
    ('password := "{password}"', "go", "password", "Secret Keyword"),
    ('user.setPassword("{password}");', "java", "password", "Secret Keyword"),
    ('secret = vault.get_secret("db-password")', "python", None, None),
    ('tokenizer.encode("hello world")', "python", None, None),
    ('tokenizer_name = "bert-base-uncased"', "python", None, None),
    ('password_prompt = "Enter password: "', "python", None, None),
    ("password: enter your password here", "yaml", None, None),
    (
        '"Server=db;User Id=sa;Password={url_password};"',
        None,
        "url_password",
        "Basic Auth Credentials",
    ),
    (
        'conn = "Server=db;User Id=sa;Password={url_password};"',
        "python",
        "url_password",
        "Basic Auth Credentials",
    ),
    # IP addresses: public v4 and v6 yes; private, loopback, documentation, versions no
    ("host = {ipv4}", "ini", "ipv4", "IP Address"),
    ("upstream [{ipv6}]:443", None, "ipv6", "IP Address"),
    ("host = 192.168.1.20", "ini", None, None),
    ("listen 127.0.0.1:8080", None, None, None),
    ('ADDR = "169.254.10.1"', "python", None, None),
    ("see 203.0.113.9 in the docs", None, None, None),
    ('__version__ = "4.2.1.7"', "python", None, None),
    ("oid = 1.3.6.1.4.1.311", None, None, None),
    ("x = a[1::2]", "python", None, None),
    # e-mail: real-looking yes; example domains and file names no
    ("# Author: {email}", "python", "email", "Email Address"),
    ("# contact: jane.doe@example.com", "python", None, None),
    ('icon = "logo@2x.png"', "python", None, None),
    ("git clone git@github.com:org/repo.git", "bash", None, None),
]


@pytest.mark.parametrize(("template", "language", "key", "expected"), CASES)
def test_should_flag(
    template: str, language: str | None, key: str | None, expected: str | None
) -> None:
    fakes = {**FAKES, "pem_open": FAKES["pem"].split("-----END")[0].rstrip()}
    line = template.format(**fakes)
    findings = _findings(line, language)
    if expected is None:
        assert not findings or (
            key is not None and _span_of(line, fakes[key]) not in _spans(findings)
        )
        return
    assert key is not None
    match = [f for f in findings if (f.start, f.end) == _span_of(line, fakes[key])]
    assert [f.secret_type for f in match] == [expected]


def _span_of(line: str, value: str) -> tuple[int, int]:
    start = line.index(value)
    return start, start + len(value)


def _spans(findings: list[Finding]) -> set[tuple[int, int]]:
    return {(f.start, f.end) for f in findings}


def test_most_specific_detector_wins_an_overlap() -> None:
    """A GitHub token assigned to `password` is a GitHub Token, reported once."""
    line = 'password = "{github}"'.format(**FAKES)
    findings = _findings(line, "python")
    assert [(f.secret_type, f.detector) for f in findings] == [
        ("GitHub Token", "GitHubTokenDetector")
    ]


def test_locate_skips_occurrences_inside_longer_words() -> None:
    line = 'abc_password = "abc"'
    assert [line[s - 1 : e + 1] for s, e in locate(line, "abc")] == ['"abc"']


def test_build_detectors_by_name_and_unknown_names() -> None:
    assert [d.name for d in build_detectors(["EmailDetector"])] == ["EmailDetector"]
    with pytest.raises(InputError, match=r"unknown detector NoSuch.*valid: .*EmailDetector"):
        build_detectors(["NoSuch"])


def test_detector_repr_has_no_secret() -> None:
    detector = build_detectors(["EmailDetector"])[0]
    assert repr(detector) == "<Detector EmailDetector: Email Address>"


def test_select_detectors_from_policy_switches() -> None:
    assert select_detectors({}) is None
    assert select_detectors({"EmailDetector": True}) is None
    selected = select_detectors({"EmailDetector": False, "IPAddressDetector": False})
    assert selected is not None
    assert set(detector_names()) - set(selected) == {"EmailDetector", "IPAddressDetector"}
    with pytest.raises(InputError, match="unknown detector Nope"):
        select_detectors({"Nope": False})


def test_keyword_detector_skips_lines_it_would_backtrack_on() -> None:
    """detect-secrets' keyword patterns are quadratic in a long word run: such lines are
    left to our linear KeywordAssignmentDetector, which still finds the assignment."""
    line = "x" * 150 + ' password = "{password}"'.format(**FAKES)
    start, end = _span_of(line, FAKES["password"])
    (theirs,) = build_detectors(["KeywordDetector"])
    (ours,) = build_detectors(["KeywordAssignmentDetector"])
    with scoped_settings():
        assert list(theirs.spans(line, "a.py", "python")) == []
        assert list(theirs.spans(line[150:], "a.py", "python")) == [(start - 150, end - 150)]
        assert list(ours.spans(line, "a.py", "python")) == [(start, end)]


def test_keyword_assignment_to_a_c_array() -> None:
    line = 'char db_password[32] = "{password}";'.format(**FAKES)
    start = line.index(FAKES["password"])
    assert _spans(_findings(line, "c")) == {(start, start + len(FAKES["password"]))}
