"""Fake secrets for the scanner's tests, drawn from a seeded RNG.

They have the shapes of real credentials and are not real. They are built when the
module is imported rather than written out, so this source holds no secret-shaped
literal for other scanners to trip on.
"""

from __future__ import annotations

import base64
import json
import random
import string

_rng = random.Random(20240611)
UPPER = string.ascii_uppercase + string.digits
LOWER = string.ascii_lowercase + string.digits
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
HEX = "0123456789abcdef"


def rand(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def _jwt() -> str:
    header = _b64url({"alg": "HS256", "typ": "JWT"})
    payload = _b64url({"sub": rand(string.digits, 10), "name": "Test User", "iat": 1700000000})
    return f"{header}.{payload}.{rand(URLSAFE, 43)}"


def _pem() -> str:
    body = "\n".join(rand(ALNUM + "+/", 64) for _ in range(6))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


FAKES: dict[str, str] = {
    "aws_id": "AKIA" + rand(UPPER, 16),
    "aws_secret": rand(ALNUM, 38) + "/+",
    "github": "ghp_" + rand(ALNUM, 36),
    "github_pat": "github_pat_" + rand(ALNUM, 22) + "_" + rand(ALNUM, 59),
    "gitlab": "glpat-" + rand(ALNUM, 20),
    "slack": f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand(ALNUM, 24)}",
    "stripe": "sk_live_" + rand(ALNUM, 34),
    "stripe24": "rk_live_" + rand(ALNUM, 24),
    "slack_lower": f"xoxp-{rand(string.digits, 11)}-{rand(string.digits, 12)}-{rand(LOWER, 32)}",
    "openai_legacy": "sk-" + rand(ALNUM, 20) + "T3BlbkFJ" + rand(ALNUM, 20),
    "url_password": rand(ALNUM, 16),
    "google": "AIza" + rand(URLSAFE, 35),
    "google_oauth": "GOCSPX-" + rand(URLSAFE, 28),
    "hf": "hf_" + rand(string.ascii_letters, 34),
    "openai": "sk-proj-" + rand(URLSAFE, 64),
    "anthropic": "sk-ant-api03-" + rand(URLSAFE, 93) + "AA",
    "npm": "npm_" + rand(ALNUM, 36),
    "pypi": "pypi-AgEIcHlwaS5vcmc" + rand(URLSAFE, 80),
    "sendgrid": f"SG.{rand(URLSAFE, 22)}.{rand(URLSAFE, 43)}",
    "twilio": "SK" + rand(HEX, 32),
    "discord": f"M{rand(ALNUM, 23)}.{rand(URLSAFE, 6)}.{rand(URLSAFE, 27)}",
    "telegram": f"{rand(string.digits, 9)}:{rand(URLSAFE, 35)}",
    "mailchimp": rand(HEX, 32) + "-us12",
    "shopify": "shpat_" + rand(HEX, 32),
    "digitalocean": "dop_v1_" + rand(HEX, 64),
    "databricks": "dapi" + rand(HEX, 32),
    "postman": f"PMAK-{rand(HEX, 24)}-{rand(HEX, 34)}",
    "square": "sq0csp-" + rand(URLSAFE, 43),
    "azure": rand(ALNUM + "+/", 86) + "==",
    "artifactory": "AKC" + rand(ALNUM, 70),
    "ibm_cos": rand(HEX, 48),
    "ibm_iam": rand(URLSAFE, 44),
    "cloudant": rand(HEX, 64),
    "softlayer": rand(LOWER, 64),
    "jwt": _jwt(),
    "pem": _pem(),
    "b64": rand(ALNUM + "+/", 40),
    "hex": rand(HEX, 40),
    "password": "Tr0ub4dor&3" + rand(string.digits, 3),
    "email": f"{rand(string.ascii_lowercase, 7)}.{rand(string.ascii_lowercase, 5)}@contoso-mail.io",
    "ipv4": "52.14.200.7",
    "ipv6": "2a03:2880:f12f:83:face:b00c:0:25de",
}
