"""False-positive filters: plain `is_*` predicates, and the table that applies them.

Each predicate answers one question about a candidate (its value, the text before it
on its line, the name it is assigned to). `false_positive()` runs the ones that make
sense for the candidate's type and returns the first reason to drop it, so a scan can
count what it dropped and why. Some predicates reuse detect-secrets' heuristics.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise


def words(text: str) -> frozenset[str]:
    """A set of words written as one whitespace-separated string."""
    return frozenset(text.split())


# Published in providers' documentation as examples; never real credentials.
DOCUMENTED_EXAMPLES = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",  # AWS access key id
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # AWS secret access key
        "AKIAI44QH8DHBEXAMPLE",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",  # Stripe
        "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # GitHub
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
        "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",  # jwt.io
    }
)
_EXAMPLE_MARKER = re.compile(r"EXAMPLE|example[-_]?(?:key|token|secret)")

_PLACEHOLDER_WORDS = words(
    """password passwd pass pwd secret token apikey api_key key changeme change_me changeit
    redacted removed hidden null none nil undefined true false yes no test testing
    example sample dummy placeholder default todo fixme secret123 password123 mypassword
    mysecret mytoken notasecret"""
)
_PLACEHOLDER = re.compile(
    r"x{4,}|\*{3,}|\.{3}|…|#{3,}|_{4,}|-{4,}|"
    r"^<[^>]*>$|^\[[^\]]*\]$|^\{[^}]*\}$|^%[^%]*%$|"
    r"your[-_ .]?(?:own[-_ .]?)?(?:api[-_ .]?|secret[-_ .]?|access[-_ .]?)?"
    r"(?:key|token|secret|password|pass|pwd)|"
    r"(?:key|token|secret|password)[-_ .]?(?:goes[-_ .]?)?here|"
    r"change[-_ .]?(?:me|it|this)|replace[-_ .]?(?:me|this|with)|insert[-_ .]?(?:your|here)|"
    r"placeholder|dummy|redacted|not[-_ .]?a[-_ .]?real|fake[-_ .]?(?:key|token|secret|password)|"
    r"(?:random|sample|example|my|some)[-_ .]?(?:string|key|token|secret|value|password)|"
    r"(?:key|token|secret|string|value|password)[-_ .]?(?:goes[-_ .]?)?here",
    re.IGNORECASE,
)
_TEMPLATE = re.compile(
    r"^\$[A-Za-z_{(]|\$\{[^}]*\}|\{\{.*\}\}|\{%.*%\}|%\([^)]*\)[sdr]|^\{[\w.]*\}$|"
    r"\{\d*\}|^@[A-Za-z_][\w.]*@$|^<%.*%>$"
)
_PRINTF = re.compile(r"%[-+ #0]?\d*(?:\.\d+)?[sdifxr]")
_ENV_LOOKUP = re.compile(
    r"(?:os\.environ(?:\.get)?|os\.getenv|getenv|environ\.get|process\.env|ENV(?:\.fetch)?|"
    r"System\.getenv|Environment\.GetEnvironmentVariable|\$_ENV|\$_SERVER|env|config|"
    r"settings|secrets|vault|credentials)\s*[\[(.]\s*[\"']?$",
    re.IGNORECASE,
)
_EXAMPLE_DOMAINS = words(
    """example.com example.org example.net example.edu test.com domain.com email.com
    yourdomain.com yourcompany.com company.com mycompany.com acme.com foo.com bar.com
    foobar.com somewhere.com someone.com host.com server.com mail.com localhost
    localdomain invalid test example local"""
)
_EXAMPLE_LOCALS = words(
    """user username you your.name yourname your_name name first.last firstname.lastname
    john.doe jane.doe johndoe janedoe john jane someone somebody nobody foo bar baz test
    email me noreply no-reply donotreply do-not-reply git admin root info"""
)
_EXAMPLE_IPS = words("1.2.3.4 4.3.2.1 1.1.1.1 8.8.8.8 8.8.4.4 9.9.9.9")
_VERSION_CONTEXT = re.compile(
    r"(?:version|release|build|\brev|\bver|\bv)[\W_]{0,6}$", re.IGNORECASE
)
_HASH_LENGTHS = frozenset({32, 40, 56, 64, 96, 128})
_CHECKSUM_WORDS = re.compile(
    r"sha\d*|md5|hash|digest|checksum|integrity|fingerprint|etag|crc|commit|revision|\brev\b|"
    r"\bsri\b|nonce|salt",
    re.IGNORECASE,
)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SEQUENCES = (
    _ALPHABET * 2,
    "0123456789" * 2,
    "0123456789ABCDEF" * 2,
    _ALPHABET + "234567" + _ALPHABET,
    _ALPHABET + _ALPHABET.lower() + "0123456789+/",
    "1234567890" * 2,
    "QWERTYUIOPASDFGHJKLZXCVBNM",
)
# Words around a generic high-entropy string that say it is not a credential.
_NOT_A_CREDENTIAL = re.compile(
    r"csrf|xsrf|signature|\bsig\b|_sig\b|nonce|revision|\brev\b|commit|integrity|etag|hash|"
    r"digest|checksum|fingerprint|sha\d*|md5|uuid|guid|\bid\b|_id\b|cache",
    re.IGNORECASE,
)
_ENCRYPTED = re.compile(r"^(?:ENC\[[A-Z0-9_]+,|\$ANSIBLE_VAULT;|vault:v\d+:|AGE-ENCRYPTED)")
_PUBLIC_KEY = re.compile(
    r"^(?:ssh-(?:rsa|ed25519|dss)|ecdsa-sha2-|sk-ssh-|-----BEGIN (?:PUBLIC KEY|CERTIFICATE|"
    r"RSA PUBLIC KEY|PGP PUBLIC)|pk_(?:live|test)_|npub1|age1[0-9a-z]{20})"
)
_KEY_NAME = re.compile(r"[A-Za-z]+(?:[_.\-][A-Za-z]+)*")
_SECRET_WORD = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
_ARN = re.compile(r"arn:[\w\-]*:[^\s\"']*$")
_PEM_LINE = re.compile(r"-----[A-Z0-9 ]+-----|\\[nr]|\s")
_SRI = re.compile(r"^sha(?:256|384|512)-[A-Za-z0-9+/]+={0,2}$")
# Names that hold something about a secret rather than the secret itself: anywhere in
# the name (`tokenizer.encode`), or as the last word of its last identifier.
_BENIGN_WORD = re.compile(
    r"tokeni[sz]|tokens\b|secretar|(?:pad|eos|bos|unk|sep|cls|mask|special)_?tokens?\b|"
    r"public|publishable|csrf|xsrf|authenticity_token|"
    # database and data-structure keys: names of columns or fields, not credentials
    r"(?:primary|foreign|schema|bucket|sort|partition|composite|natural|sequence|cache|"
    r"lookup|map|dict|hot)[_.\-]?key",
    re.IGNORECASE,
)
_BENIGN_SUFFIX = re.compile(
    r"(?:^|_)(?:type|kind|name|names|file|filename|path|dir|url|uri|endpoint|field|prompt|"
    r"label|length|len|size|count|num|min|max|limit|header|env|var|regex|re|pattern|format|"
    r"fmt|class|mode|method|scope|policy|hint|message|msg|help|title|placeholder|id|ids|"
    r"index|idx|hash|hashed|digest|salt|algorithm|algo|enabled|required|expiry|expires|ttl|"
    r"timeout|rotation|version|location|provider|source|store|manager|backend|reset|"
    r"changed|confirm|confirmation|question|input|widget|error|errors|valid|validator|"
    r"usage|budget|list|range|start|end|pos|position|offset|line|col|column)$",
    re.IGNORECASE,
)
_IDENTIFIER = re.compile(r"[A-Za-z_$@][\w$@\-]*")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_A_VALUE = re.compile(
    r"^(?:true|false|null|none|nil|undefined|yes|no|on|off|~|\||>|\|-|>-|required|optional|"
    r"string|str|int|bool|bytes|object|any|\d{1,5})$",
    re.IGNORECASE,
)
# `#add-password`, `/forgot-password`, `arn:aws:…`, `cms_user_password`, `$OTHER_VAR'`
_REFERENCE = re.compile(
    r"^(?:[#./][\w\-./:#]*|arn:[\w\-]+:.*|'?\$[A-Za-z_]\w*'?"
    r"|(?=[a-z_.\-]*(?:pass|secret|token|key))[a-z]+(?:[_.\-][a-z]+)+)$"
)
_LONG_RUN = re.compile(r"(.)\1{11}")
_GENERIC_TYPES = frozenset(
    {"Secret Keyword", "Base64 High Entropy String", "Hex High Entropy String"}
)
_ENTROPY_TYPES = frozenset({"Base64 High Entropy String", "Hex High Entropy String"})
_AWS_TYPE = "AWS Access Key"
_ADDRESS_TYPES = frozenset({"Email Address", "IP Address"})
# Values with structure of their own that placeholder patterns (`----`) would misread.
_STRUCTURED_TYPES = _ADDRESS_TYPES | {"Private Key"}
_LOCK_FILES = words(
    """package-lock.json yarn.lock pnpm-lock.yaml poetry.lock Pipfile.lock Cargo.lock
    composer.lock Gemfile.lock go.sum packages.lock.json Podfile.lock uv.lock"""
)


def is_documented_example(value: str) -> bool:
    """A key published in a provider's documentation (AKIAIOSFODNN7EXAMPLE, ...)."""
    return value in DOCUMENTED_EXAMPLES or bool(_EXAMPLE_MARKER.search(value))


def is_placeholder(value: str) -> bool:
    """your-api-key-here, changeme, xxxx, <YOUR_TOKEN>, ****, a bare keyword..."""
    stripped = value.strip().lower()
    return stripped in _PLACEHOLDER_WORDS or bool(_PLACEHOLDER.search(value))


def is_template(value: str) -> bool:
    """A reference to a value held elsewhere: ${VAR}, $VAR, {{ var }}, %(name)s, or a
    printf format (`%d,%d-%d`: two directives, or nothing alphanumeric besides one)."""
    if _TEMPLATE.search(value):
        return True
    directives = _PRINTF.findall(value)
    rest = _PRINTF.sub("", value)
    return len(directives) >= 2 or (len(directives) == 1 and not any(c.isalnum() for c in rest))


def is_env_lookup(before: str) -> bool:
    """The span is the argument of an environment or config lookup (text before it)."""
    return bool(_ENV_LOOKUP.search(before[-80:]))


def is_example_email(value: str) -> bool:
    """An address at a documentation or test domain, or a placeholder or role mailbox."""
    local, _, domain = value.lower().rpartition("@")
    domain_parts = domain.split(".")
    suffixes = {".".join(domain_parts[i:]) for i in range(len(domain_parts))}
    return bool(suffixes & _EXAMPLE_DOMAINS) or local in _EXAMPLE_LOCALS


def is_non_public_ip(value: str) -> bool:
    """Private, loopback, link-local, documentation, reserved or unparseable addresses."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return True
    return not ip.is_global or ip.is_reserved or ip.is_multicast


def is_version_number(value: str, before: str) -> bool:
    """A dotted quad written as a version (`version 1.2.3.4`, `v4.1.0.2`)."""
    return "." in value and bool(_VERSION_CONTEXT.search(before[-16:]))


def is_uuid(value: str) -> bool:
    """A UUID: an identifier, not a credential (for generic detectors only)."""
    return bool(_UUID.search(value))


def is_checksum(value: str, name: str | None, line: str) -> bool:
    """A hash in checksum context: hex of a digest's length, or an SRI string, near a hash word."""
    if _SRI.match(value):
        return True
    if not (_HEX.match(value) and len(value) in _HASH_LENGTHS):
        return False
    return bool(_CHECKSUM_WORDS.search(name or "") or _CHECKSUM_WORDS.search(line))


def is_sequential(value: str) -> bool:
    """abcdef..., 0123456789, an alphabet like A-Z2-7: typed in order, not drawn at random.

    detect-secrets' check finds runs of its own sequences; ours also finds strings whose
    neighbouring characters mostly follow each other (a random key: about 1 in 60).
    """
    if len(value) < 6:
        return False
    steps = sum(ord(b) - ord(a) == 1 for a, b in pairwise(value))
    upper = value.upper()
    return steps >= (len(value) - 1) / 2 or any(upper in seq for seq in _SEQUENCES)


def is_example_ip(value: str) -> bool:
    """Addresses written as examples: 123.45.67.89, 1.2.3.4, 12.34.56.78."""
    return is_sequential(value.replace(".", "")) or value in _EXAMPLE_IPS


def is_benign_name(name: str | None) -> bool:
    """A name that holds something about a secret (`token_type`, `passwordField`)."""
    if not name:
        return False
    if _BENIGN_WORD.search(name):
        return True
    identifiers = _IDENTIFIER.findall(name)
    last = _CAMEL.sub("_", identifiers[-1]) if identifiers else ""
    return bool(_BENIGN_SUFFIX.search(last))


def is_low_diversity(value: str) -> bool:
    """`AIzaaaaa…`, `xxxx…`, `1111…`: too few distinct characters to be drawn at random,
    or one character 12 times in a row after the start (`sntryu_aaaa…`: a random token
    has no such run; a Twitter bearer token starts with one, as its format says)."""
    return (len(value) >= 8 and len(set(value)) <= min(len(value) // 4, 5)) or bool(
        _LONG_RUN.search(value.lstrip(value[:1]))
    )


def is_number_or_symbols(value: str) -> bool:
    """All digits (`123456`, a port, an id) or no letter or digit at all (`********`)."""
    return value.isdigit() or not any(c.isalnum() for c in value)


def is_encrypted(value: str) -> bool:
    """Ciphertext meant to be committed: SOPS `ENC[…]`, Ansible Vault, Vault transit."""
    return bool(_ENCRYPTED.match(value))


def is_key_name(value: str) -> bool:
    """A name, not a value: `DB_PASSWORD`, `x-auth-token`, `client_secret`."""
    if not _KEY_NAME.fullmatch(value):
        return False
    return bool(_SECRET_WORD.search(value)) or (value.isupper() and "_" in value)


def is_public_key(value: str) -> bool:
    """A public key or certificate, or a publishable key (`pk_live_`)."""
    return bool(_PUBLIC_KEY.match(value))


def is_not_a_credential_context(name: str | None, line: str) -> bool:
    """A CSRF token, signature, nonce, revision or hash, by the words around it."""
    return bool(_NOT_A_CREDENTIAL.search(name or "") or _NOT_A_CREDENTIAL.search(line))


def is_in_arn(before: str) -> bool:
    """Part of an Amazon resource name (`arn:aws:iam::…`), not a key."""
    return bool(_ARN.search(before[-200:]))


def is_dummy_private_key(value: str) -> bool:
    """A key block whose body is too short, too repetitive or elided to be a key."""
    body = _PEM_LINE.sub("", value)
    return len(body) < 64 or len(set(body)) < 20 or "..." in body or "xxxx" in body.lower()


def is_not_a_value(value: str) -> bool:
    """Too short, a literal like true/null, a type name, prose with spaces, a reference
    (a CSS selector, a URL path, an ARN) or an identifier that names a secret."""
    return (
        len(value) < 4
        or any(c.isspace() for c in value)
        or bool(_NOT_A_VALUE.match(value) or _REFERENCE.match(value))
    )


def is_lock_file(filename: str) -> bool:
    """A package manager's lock file: full of hashes, never of secrets."""
    return filename.rsplit("/", 1)[-1] in _LOCK_FILES


def is_word_like_key_id(value: str) -> bool:
    """`ASIAPACIFICREGION…`: an AWS-shaped id of letters only, in prose (AKIA excepted)."""
    return not value.startswith("AKIA") and value[4:].isalpha()


@dataclass(frozen=True)
class Candidate:
    """What the filters see of one detector match. `repr` never shows the value."""

    value: str = field(repr=False)
    secret_type: str
    line: str = field(repr=False)  # the whole line the value is on
    column: int  # offset of the value in `line`
    filename: str
    name: str | None = field(default=None, repr=False)  # assigned-to name, from context
    previous: str = field(default="", repr=False)  # the line before, for context words

    @property
    def before(self) -> str:
        return self.line[: self.column]


Check = tuple[str, Callable[[Candidate], bool], Callable[[str], bool]]
_ALL: Callable[[str], bool] = lambda t: True  # noqa: E731
_NOT_ADDRESS: Callable[[str], bool] = lambda t: t not in _ADDRESS_TYPES  # noqa: E731
_TOKEN_LIKE: Callable[[str], bool] = lambda t: t not in _STRUCTURED_TYPES  # noqa: E731
_GENERIC: Callable[[str], bool] = lambda t: t in _GENERIC_TYPES  # noqa: E731
# crypt(3) hashes start with `$id$`, which reads like a `$VAR` template
_NOT_DOLLAR_FORMAT: Callable[[str], bool] = lambda t: _NOT_ADDRESS(t) and t != "Password Hash"  # noqa: E731

# (reason, predicate, applies to type): value checks run before context is computed.
VALUE_CHECKS: tuple[Check, ...] = (
    ("documented example", lambda c: is_documented_example(c.value), _ALL),
    ("placeholder", lambda c: is_placeholder(c.value), _TOKEN_LIKE),
    ("sequential", lambda c: is_sequential(c.value), _NOT_ADDRESS),
    ("template", lambda c: is_template(c.value), _NOT_DOLLAR_FORMAT),
    ("environment lookup", lambda c: is_env_lookup(c.before), _NOT_ADDRESS),
    ("example e-mail", lambda c: is_example_email(c.value), lambda t: t == "Email Address"),
    ("non-public IP", lambda c: is_non_public_ip(c.value), lambda t: t == "IP Address"),
    ("version number", lambda c: is_version_number(c.value, c.before), lambda t: t == "IP Address"),
    ("example IP", lambda c: is_example_ip(c.value), lambda t: t == "IP Address"),
    ("UUID", lambda c: is_uuid(c.value), lambda t: t in _ENTROPY_TYPES),
    ("lock file", lambda c: is_lock_file(c.filename), lambda t: t in _ENTROPY_TYPES),
    ("not a value", lambda c: is_not_a_value(c.value), lambda t: t == "Secret Keyword"),
    ("low diversity", lambda c: is_low_diversity(c.value), _TOKEN_LIKE),
    ("number or symbols", lambda c: is_number_or_symbols(c.value), _GENERIC),
    ("encrypted", lambda c: is_encrypted(c.value), _ALL),
    ("key name", lambda c: is_key_name(c.value), _GENERIC),
    ("public key", lambda c: is_public_key(c.value), _ALL),
    ("inside an ARN", lambda c: is_in_arn(c.before), _NOT_ADDRESS),
    ("dummy key", lambda c: is_dummy_private_key(c.value), lambda t: t == "Private Key"),
    ("word, not a key", lambda c: is_word_like_key_id(c.value), lambda t: t == _AWS_TYPE),
)
# Checks that need the name the value is assigned to (from audit.context).
CONTEXT_CHECKS: tuple[Check, ...] = (
    ("checksum", lambda c: is_checksum(c.value, c.name, c.previous + "\n" + c.line), _GENERIC),
    ("benign name", lambda c: is_benign_name(c.name), lambda t: t == "Secret Keyword"),
    (
        "not a credential",
        lambda c: is_not_a_credential_context(c.name, c.previous + "\n" + c.line),
        lambda t: t in _ENTROPY_TYPES,
    ),
)


def false_positive(candidate: Candidate, checks: tuple[Check, ...] = VALUE_CHECKS) -> str | None:
    """The first reason to drop `candidate`, or None to keep it."""
    for reason, predicate, applies in checks:
        if applies(candidate.secret_type) and predicate(candidate):
            return reason
    return None
