from __future__ import annotations

import pytest

from audit.corpus import Sample
from audit.detectors import build_detectors, detector_names, select_detectors
from audit.errors import InputError
from audit.findings import Finding
from audit.scan import scan_samples, scan_text
from tests.audit.fakes import FAKES


def _findings(line: str, language: str | None, origin: str = "sample.txt") -> list[Finding]:
    sample = Sample(id=origin, origin=origin, text=line, language=language)
    return list(scan_samples([sample])[0].findings)


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
    # word boundaries: a token inside a longer word is not a token
    ("see x{google} in the log", None, None, None),
    ("run task_test_{stripe_body} now", None, None, None),
    ("the ASIAPACIFICREGIONNAMES list", None, None, None),
    ('role = "arn:aws:iam::123456789012:role/{aws_id}"', "python", None, None),
    # placeholders
    ('key = "AIza' + "a" * 35 + '"', "python", None, None),
    ('SLACK = "xoxp-1234-5678-abcd"', "python", None, None),
    ('api_key = "RANDOMSTRINGHERE"', "python", None, None),
    # the keyword detector on numbers, symbols, ciphertext, key names and public keys
    ('password = "12345678"', "python", None, None),
    ('password = "********"', "python", None, None),
    ("password: ENC[AES256_GCM,data:{b64},type:str]", "yaml", None, None),
    ('password = "DB_PASSWORD"', "python", None, None),
    ('public_key = "ssh-ed25519 {b64}"', "python", None, None),
    # entropy detectors on CSRF tokens, signatures and revision hashes
    ('csrf_token = "{b64}"', "python", None, None),
    ('signature = "{b64}"', "python", None, None),
    ('revision = "{hex}"', "python", None, None),
    # a private key with a dummy body
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----", None, None, None),
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
    fakes = {
        **FAKES,
        "pem_open": FAKES["pem"].split("-----END")[0].rstrip(),
        "stripe_body": FAKES["stripe"][8:],
    }
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


def test_keyword_assignment_to_a_c_array() -> None:
    line = 'char db_password[32] = "{password}";'.format(**FAKES)
    start = line.index(FAKES["password"])
    assert _spans(_findings(line, "c")) == {(start, start + len(FAKES["password"]))}


def test_inline_allowlist_is_reported_not_dropped() -> None:
    """detect-secrets' pragmas: same line, and `nextline` on the line before."""
    text = 'a = "{github}"  # pragma: allowlist secret\n'.format(**FAKES)
    text += "// pragma: allowlist nextline secret\nb = '{npm}'\nc = '{hf}'\n".format(**FAKES)
    result = scan_text(text, "x.py")
    assert [f.secret_type for f in result.allowlisted] == ["GitHub Token", "NPM tokens"]
    assert [f.secret_type for f in result.findings] == ["Hugging Face Token"]


def test_encoded_finding_spans_the_blob_with_the_inner_type() -> None:
    import base64

    blob = base64.b64encode(("token=" + FAKES["github"]).encode()).decode()
    text = f'config = "{blob}"'
    (finding,) = scan_text(text, "x.py").findings
    assert (finding.start, finding.end) == (10, 10 + len(blob))
    assert (finding.secret_type, finding.detector) == ("GitHub Token", "EncodedSecretDetector")


def test_a_provider_name_must_be_a_word_of_the_variable_name() -> None:
    """`sumOfExposures`, `rookTable`, `cameraKit` hold a provider's name only by accident."""
    from audit.scan import scan_text

    sumo, okta = "su" + "Gy5imvADdvU9", "00" + "x7Qp2Lm9Rt" * 4
    for line in (f"sumOfExposures = {sumo}", f"rookTable = {okta}"):
        found = scan_text(line + "\n", "notes.txt").findings
        assert not [f for f in found if f.detector in ("SumoLogicKeyDetector", "OktaTokenDetector")]
    for line, detector in ((f"SUMO_ACCESS_ID = {sumo}", "SumoLogicKeyDetector"),
                           (f"oktaToken = {okta}", "OktaTokenDetector")):  # fmt: skip
        assert [f.detector for f in scan_text(line + "\n", "notes.txt").findings] == [detector]
