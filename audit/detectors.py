"""Secret detectors: a registry of small classes and table rows, all reporting exact spans.

Every detector declares the lower-case `keywords` that one of its secrets always
contains; the scanner finds all keywords of all detectors in one pass (an Aho-Corasick
automaton) and runs a detector only where its keywords occur. How it runs depends on
its `mode`:

- `anchored`: the keyword is where the secret starts (`ghp_`): match at that position;
- `line`: search the line holding the keyword (`ALGOLIA_KEY = "…"`);
- `text`: search the whole text once when the keyword occurs (a PEM block, a YAML doc);
- `run`: look at every run of token characters (letters, digits, `+/=_-.~%`) at least
  `min_run` long, found without a regex (high-entropy strings, encoded blobs).

Provider formats are rows of `audit.providers.RULES`; the detectors with logic of
their own are classes below. No detector depends on detect-secrets at run time (its
plugins report parts of secrets and cost most of its time); the names and secret
types of its plugins are kept, so baselines and policies still speak its language.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property, lru_cache
from typing import ClassVar
from urllib.parse import unquote

from audit.errors import InputError
from audit.filters import is_benign_name, is_placeholder, is_template, words
from audit.providers import RULES, UUID, Rule
from audit.suggest import close_matches

log = logging.getLogger(__name__)
Span = tuple[int, int]
Inner = Callable[[str], str | None]  # decoded text -> the secret type found in it, or None

# Languages whose keyword-assigned secrets must be quoted string literals: in code, an
# unquoted right-hand side is an expression (`password = get_password()`), not a value.
CODE_LANGUAGES = frozenset(
    {"python", "javascript", "typescript", "tsx", "java", "go", "ruby", "php", "c", "cpp"}
)
# Formats where a bare value after `key =` / `key:` is the value itself.
CONFIG_LANGUAGES = frozenset(
    {"yaml", "json", "toml", "ini", "dotenv", "bash", "makefile", "terraform", "xml"}
)
# Prose and logs: a bare value counts only when it does not read like a word.
TEXT_LANGUAGES = frozenset({None, "text", "markdown", "log"})

PRIORITY_PROVIDER = 3  # a provider-specific format: the most specific answer
PRIORITY_ASSIGNED = 2  # a value assigned to a secret-sounding name, or a URL password
PRIORITY_GENERIC = 1  # high-entropy strings, e-mail and IP addresses
KEYWORD_TYPE = "Secret Keyword"  # detect-secrets' type for keyword-assigned values
PROVIDER_TYPES = frozenset(rule.secret_type for rule in RULES)


class Detector:
    """One detector as the scanner sees it: a name, a type, keywords, and spans."""

    name: ClassVar[str] = ""
    secret_type: ClassVar[str] = ""
    keywords: ClassVar[tuple[str, ...]] = ()
    mode: ClassVar[str] = "line"  # anchored | line | text | run
    priority: ClassVar[int] = PRIORITY_PROVIDER
    languages: ClassVar[frozenset[str | None] | None] = None  # None: every language
    min_run: ClassVar[int] = 0

    def __repr__(self) -> str:
        return f"<Detector {self.name}: {self.secret_type}>"

    def secret_types(self) -> frozenset[str]:
        """Every secret type this detector can report."""
        return frozenset({self.secret_type})

    def runs_on(self, language: str | None) -> bool:
        return self.languages is None or language in self.languages

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        """Spans of the secrets in `text` (a line, or the whole text in `text` mode)."""
        return iter(())

    def match_at(self, text: str, pos: int) -> Span | None:
        """`anchored` mode: the secret that starts at `pos`, if any."""
        return None

    def run_spans(
        self, text: str, start: int, end: int, inner: Inner
    ) -> Iterator[tuple[Span, str]]:
        """`run` mode: (span, secret type) of the secrets in the run `text[start:end]`."""
        return iter(())


class RuleDetector(Detector):
    """A row of the provider table (`audit.providers`)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name  # type: ignore[misc]
        self.secret_type = rule.secret_type  # type: ignore[misc]
        self.keywords = rule.keywords  # type: ignore[misc]
        self.mode = "anchored" if rule.anchored else "line"  # type: ignore[misc]

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return self.rule.compile()

    def match_at(self, text: str, pos: int) -> Span | None:
        match = self.regex.match(text, pos)
        return _secret_span(match) if match else None

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for match in self.regex.finditer(text):
            yield _secret_span(match)


def _secret_span(match: re.Match[str]) -> Span:
    """The span of the group named `s` (or `u`) if it took part, else the whole match."""
    for group in ("s", "u"):
        if group in match.re.groupindex and match.start(group) >= 0:
            return match.span(group)
    return match.span()


# --------------------------------------------------------------------------------------
# Formats with logic of their own.
# --------------------------------------------------------------------------------------


class JwtDetector(Detector):
    """JSON Web Tokens with their signature, whose header decodes to a JSON object."""

    name = "JwtDetector"
    secret_type = "JSON Web Token"
    keywords = ("eyj",)
    mode = "anchored"
    _REGEX = re.compile(
        r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*)?"
        r"(?![A-Za-z0-9_\-])"
    )

    def match_at(self, text: str, pos: int) -> Span | None:
        match = self._REGEX.match(text, pos)
        if match is None or not all(_json_header(p) for p in match.group(0).split(".")[:2]):
            return None
        return match.span()


def _json_header(part: str) -> bool:
    try:
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return isinstance(json.loads(decoded), dict)
    except (binascii.Error, ValueError):
        return False


class PrivateKeyDetector(Detector):
    """PEM and OpenSSH private keys, spanning the whole block: the body is the secret."""

    name = "PrivateKeyDetector"
    secret_type = "Private Key"
    keywords = ("private key",)
    mode = "text"
    _BLOCK = re.compile(
        r"-----BEGIN (?P<label>(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:.{0,16384}?-----END (?P=label)-----"
        r"|(?:(?:\\[nr]|\s)+(?:[A-Za-z0-9+/=]{16,}|[A-Za-z\-]+: [^\n\\]*))+)",
        re.DOTALL,
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for match in self._BLOCK.finditer(text):
            start, end = match.span()
            while end > start and (text[end - 1].isspace() or text[end - 2 : end] == "\\n"):
                end -= 2 if text[end - 2 : end] == "\\n" else 1
            yield start, end


class EmailDetector(Detector):
    """E-mail addresses: personal data that models memorize from comments and headers."""

    name = "EmailDetector"
    secret_type = "Email Address"
    keywords = ("@",)
    priority = PRIORITY_GENERIC
    _REGEX = re.compile(
        r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-])"
    )
    # File names such as `icon@2x.png` look like addresses.
    _NOT_TLDS = words(
        """png jpg jpeg gif svg webp ico js mjs ts css scss html htm py rb go java json
        yaml yml xml txt md rst lock map min"""
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for match in self._REGEX.finditer(text):
            value = match.group(0)
            tld = value.rsplit(".", 1)[-1].lower()
            if tld not in self._NOT_TLDS and ".." not in value:
                yield match.span()


class IPAddressDetector(Detector):
    """Public IPv4 and IPv6 addresses (candidates come from the scanner's digit pass)."""

    name = "IPAddressDetector"
    secret_type = "IP Address"
    keywords = ()
    mode = "ip"
    priority = PRIORITY_GENERIC
    _V4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
    _V6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

    def match_at(self, text: str, pos: int) -> Span | None:
        for regex in (self._V4, self._V6):
            match = regex.match(text, pos)
            if match and _is_ip(match.group(0)):
                return match.span()
        return None


def _is_ip(value: str) -> bool:
    if ":" in value and value.count(":") < 2:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class ConnectionStringDetector(Detector):
    """Passwords in URLs (`scheme://user:PASSWORD@host`) and `Password=...;` strings."""

    name = "ConnectionStringDetector"
    secret_type = "Basic Auth Credentials"
    keywords = ("://", "password=", "pwd=", "password =", "pwd =")
    priority = PRIORITY_ASSIGNED
    _REGEXES = (
        re.compile(
            r"\b[A-Za-z][A-Za-z0-9+.\-]{0,20}://[^\s:/@'\"`]{1,64}:([^\s@'\"`/]{1,128})@[\w\-\[]"
        ),
        re.compile(r"(?<![\w])(?:password|pwd)\s*=\s*([^;'\"\s]{1,128})(?=;)", re.IGNORECASE),
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for regex in self._REGEXES:
            for match in regex.finditer(text):
                yield match.span(1)


class CurlCredentialDetector(Detector):
    """`curl -u user:password` (the whole credential), in a one-line command or one
    continued over lines with `\\`. A password that is a placeholder, a variable or the
    user name again is not a credential; `-u KEY:` (an API key as the user) is."""

    name = "CurlCredentialDetector"
    secret_type = "Basic Auth Credentials"
    keywords = ("curl",)
    mode = "text"
    priority = PRIORITY_ASSIGNED
    # `curl` first, so the regex engine jumps between occurrences of the literal
    _COMMAND = re.compile(r"curl\b(?<![\w\-]curl)[^\n\\]*(?:\\(?:\r?\n|.)[^\n\\]*)*")
    _USER = re.compile(
        r"(?<!\S)(?:-u|--user)(?:=|[ \t]+)(?:(?P<q>[\"'])(?P<qv>[^\"'\s:]*:[^\"'\s]*)(?P=q)"
        r"|(?P<bv>[\w$@.\-]*:[^\s\"'`]+))"
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for command in self._COMMAND.finditer(text):
            for match in self._USER.finditer(text, *command.span()):
                group = "qv" if match.group("qv") is not None else "bv"
                if _credential_ok(match.group(group)):
                    yield match.span(group)


def _credential_ok(credential: str) -> bool:
    user, _, password = credential.partition(":")
    if password and password == user:
        return False
    secret = password or user  # `-u KEY:` sends an API key as the user name
    return (
        len(secret) >= 6
        and not is_placeholder(secret)
        and not is_template(secret)
        and not secret.startswith(("$", "[", "<", "{", "%"))
        and (looks_random(secret) or not secret.isalpha())
    )


class AuthorizationHeaderDetector(Detector):
    """Credentials in HTTP headers: `Authorization: Bearer …`, `X-Api-Key: …`."""

    name = "AuthorizationHeaderDetector"
    secret_type = "HTTP Authorization Credentials"
    keywords = (
        "authorization", "api-key", "auth-token", "access-token", "private-token", "-h ",
        "--header",
    )  # fmt: skip
    priority = PRIORITY_ASSIGNED
    _HEADER_NAME = re.compile(r"auth|token|api-?key|secret|pass|crumb", re.IGNORECASE)
    _REGEXES = (
        re.compile(
            r"(?i:authorization)[\"']?\s*[:=,]\s*[\"']?(?i:bearer|basic|token|apikey|api-key|"
            r"sso-key|digest)\s+(?P<s>[A-Za-z0-9+/_.~=\-]{8,})"
        ),
        re.compile(
            r"(?i:x-api-key|api-key|x-auth-token|x-access-token|private-token)[\"']?\s*[:=,]\s*"
            r"[\"']?(?P<s>[A-Za-z0-9+/_.~=\-]{8,})"
        ),
        re.compile(
            r"(?i:authorization)[\"']?[ \t]*:[ \t]*(?P<s>[A-Za-z0-9+/_.~=\-]{16,})(?![^\s\"',;])"
        ),
    )
    # `curl -H "Api-Token: …"`: any header whose name says it carries a credential
    _CURL_HEADER = re.compile(
        r"(?:(?<![\w\-])-H|--header)(?:=|[ \t]+)[\"']?(?P<name>[A-Za-z][\w\-]{0,40})[ \t]*:[ \t]*"
        r"(?:(?i:bearer|basic|token|api-token|apikey|sso-key)[ \t]+)?(?P<s>[A-Za-z0-9+/_.~=\-]{8,})"
        r"(?![^\s\"'])"
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for regex in self._REGEXES:
            for match in regex.finditer(text):
                yield match.span("s")
        for match in self._CURL_HEADER.finditer(text):
            if self._HEADER_NAME.search(match.group("name")) and looks_random(match.group("s")):
                yield match.span("s")


class KubernetesSecretDetector(Detector):
    """Every value of a Kubernetes `Secret`'s `data:` (base64) and `stringData:` maps."""

    name = "KubernetesSecretDetector"
    secret_type = "Kubernetes Secret"
    keywords = ("kind:",)
    mode = "text"
    priority = PRIORITY_ASSIGNED
    _KIND = re.compile(r"^[ \t]*kind:[ \t]*[\"']?[Ss]ecret[\"']?[ \t]*$", re.MULTILINE)
    _MAP = re.compile(r"^(?P<indent>[ \t]*)(?:data|stringData):[ \t]*\n", re.MULTILINE)
    _ENTRY = re.compile(
        r"(?P<indent>[ \t]+)[\w.\-]+:[ \t]*[\"']?(?P<v>[^\s\"'#]+)[\"']?[ \t]*(?:\n|$)"
    )
    _BLOCK = re.compile(r"[ \t]+(?P<v>[^\s\"'#]+)[ \t]*(?:\n|$)")  # under `key: |`

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for document in _yaml_documents(text):
            if self._KIND.search(text, *document):
                yield from self._values(text, *document)

    def _values(self, text: str, start: int, end: int) -> Iterator[Span]:
        for block in self._MAP.finditer(text, start, end):
            pos, indent = block.end(), None
            while (entry := self._ENTRY.match(text, pos, end)) is not None:
                if len(entry.group("indent")) <= len(block.group("indent")) or (
                    indent is not None and entry.group("indent") != indent
                ):
                    break
                indent = entry.group("indent")
                pos = entry.end()
                if entry.group("v") in _BLOCK_SCALAR:
                    entry = self._BLOCK.match(text, pos, end) or entry
                    pos = entry.end()
                if len(entry.group("v")) >= 12:  # base64 of fewer than 8 bytes holds no secret
                    yield entry.span("v")


_BLOCK_SCALAR = frozenset({"|", ">", "|-", ">-", "|+", ">+"})


def _yaml_documents(text: str) -> Iterator[Span]:
    start = 0
    for match in re.finditer(r"^---[ \t]*$", text, re.MULTILINE):
        yield start, match.start()
        start = match.end()
    yield start, len(text)


# --------------------------------------------------------------------------------------
# Values assigned to secret-sounding names, in every syntax we know.
# --------------------------------------------------------------------------------------

_STRONG = (
    r"pass(?:word|wd|phrase)|pwd|secret|token|api_?key|apikey|access_?key|auth_?key|"
    r"private_?key|priv_?key|client_?key|credentials?|creds|db_?pass|contrase(?:ñ|n)a|passwort"
)
_WEAK = r"[\w.\-]{0,40}?(?:key|auth|license|licence|sas)"
_NAME = rf"(?:[A-Za-z_$@][\w$@.\-]{{0,60}}?)?(?:{_STRONG})[\w.\-]{{0,60}}|{_WEAK}"
_OPS = r":::=|::=|:=|\?=|\+=|\.=|=>|===?|!==?|=|:|\("
_QUOTED = r"(?P<q>[\"'`])(?P<qv>(?:(?!(?P=q))[^\n\\]){1,256})(?P=q)"
_BARE = r"(?P<bv>[^\s\"'`,;#(){}\[\]<>\\]{1,256})(?=[ \t]*(?:$|[,;}\]]|#|\r|\\[nrt]))"
_ASSIGNMENT = re.compile(
    rf"(?<![\w$@.\-])(?P<name>{_NAME})(?:\[\d*\])?[\"'\]]{{0,2}}"
    r"(?:[ \t]*:[ \t]*[A-Za-z_][\w.\[\], |]*?[ \t]*(?==)|[ \t]+\*?[A-Za-z_][\w.\[\]]*(?=[ \t]*=))?"
    rf"[ \t]*(?P<op>{_OPS})[ \t]*(?:[rRbBuUfF]{{1,2}}(?=[\"'])|@(?=\"))?(?:{_QUOTED}|{_BARE})",
    re.IGNORECASE,
)
# A cheap necessary condition for `_ASSIGNMENT` (a keyword, the rest of the name, then an
# operator), so that most lines that merely mention a key or `pass` skip the costly regex.
_ASSIGN_HINT = re.compile(
    r"(?i:pass|pwd|secret|token|key|cred|contrase|auth|sas|licen)[\w$@.\-]*(?:\[\d*\])?"
    r"[\"'\]]{0,2}[ \t]*(?:[:=(!]|[.?+]=|\*?[A-Za-z_][\w.\[\]]*[ \t]*=)"
)
_XML_ELEMENT = re.compile(
    rf"<(?P<name>[\w:.\-]{{0,40}}?(?:{_STRONG})[\w:.\-]{{0,40}})(?:\s[^<>]*)?>"
    r"(?:[ \t]*\r?\n[ \t]*)?(?P<v>[^<>\s](?:[^<>\n]{0,255}?[^<>\s])?)(?:[ \t]*\r?\n[ \t]*)?"
    r"</(?P=name)>",
    re.IGNORECASE,
)
_XML_CLOSE = re.compile(r"</([\w:.\-]{1,81})>")
_STRONG_NAME = re.compile(_STRONG, re.IGNORECASE)
_KEY_VALUE = re.compile(
    rf"(?i:\b(?:key|name))\s*=\s*\"(?P<name>[^\"]{{0,60}}?(?i:{_STRONG})[^\"]{{0,60}})\"\s+"
    r"(?i:value)\s*=\s*\"(?P<v>[^\"]{1,256})\""
)
_STRING_PAIR = re.compile(
    rf"(?P<nq>[\"'])(?P<name>[\w.\-]{{0,60}}?(?i:{_STRONG})[\w.\-]{{0,60}})(?P=nq)\s*,\s*"
    r"(?P<q>[\"'])(?P<v>(?:(?!(?P=q))[^\n\\]){1,256})(?P=q)"
)
# `?api_key=…&`: a secret in a URL's query string
_QUERY = re.compile(
    rf"[?&](?P<name>[\w.\-]{{0,30}}?(?i:{_STRONG})[\w.\-]{{0,30}})=(?P<v>[^&\s\"'#<>]{{8,256}})"
)
# `--api-key VALUE`, `--password=VALUE`; `psexec … -p VALUE`
_OPTION = re.compile(
    r"(?<![\w\-])--?(?i:api[-_]?key|(?:auth[-_]|access[-_])?token|password|passwd|secret)"
    r"(?:=|[ \t]+)(?P<q>[\"']?)(?P<v>[^\s\"'`]{8,256})(?P=q)(?=\s|$)"
)
_PSEXEC = re.compile(
    r"(?i:psexec)\S*[ \t].*?[ \t]-p[ \t]+(?P<q>[\"']?)(?P<v>[^\s\"'`]{4,256})(?P=q)"
)
_SETTER = re.compile(r"(?:set|with|use|update|put)_?[A-Za-z]", re.IGNORECASE)
_WEAK_NAME = re.compile(rf"^(?:{_WEAK})$", re.IGNORECASE)
_LOOSE_BARE = frozenset({"dotenv", "ini"})
_DOTTED = re.compile(r"[A-Za-z_][\w\-]*(?:\.[\w\-]+)+")


class KeywordDetector(Detector):
    """Values assigned to secret-sounding names, whatever the syntax.

    Assignments (`=`, `:`, `:=`, `=>`, `?=`, `::=`, `.=`), Go `var x string = "…"`,
    setters (`setPassword("…")`), string pairs (`setProperty("db.password", "…")`,
    `"key" => "…"`), XML elements and `key="…" value="…"` attributes. In code only
    quoted values count; in config files bare ones too; in prose, bare values only when
    they do not read like words. Names that only end in `key`/`auth` (weak names) need
    a value that looks random.
    """

    name = "KeywordDetector"
    secret_type = KEYWORD_TYPE
    keywords = ("pass", "pwd", "secret", "token", "key", "credential", "creds", "contrase",
                "auth", "sas", "licen", "psexec")  # fmt: skip
    priority = PRIORITY_ASSIGNED

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        yield from self._assignments(text, language)
        for regex in (_KEY_VALUE, _STRING_PAIR):
            for match in regex.finditer(text):
                name = match.group("name")
                if not is_benign_name(name) and _value_ok(name, match.group("v"), quoted=True):
                    yield match.span("v")
        for match in _QUERY.finditer(text):
            if _value_ok(match.group("name"), match.group("v"), quoted=False):
                yield match.span("v")
        for regex in (_OPTION, _PSEXEC):
            for match in regex.finditer(text):
                if regex is _PSEXEC or looks_random(match.group("v")):
                    yield match.span("v")

    def _assignments(self, line: str, language: str | None) -> Iterator[Span]:
        if not _ASSIGN_HINT.search(line):
            return
        for match in _ASSIGNMENT.finditer(line):
            quoted = match.group("qv") is not None
            group = "qv" if quoted else "bv"
            if not quoted and not _bare_ok(line, match, language):
                continue
            if match.group("op") == "(" and not _is_setter(match.group("name"), language):
                continue
            if _value_ok(
                match.group("name"),
                match.group(group),
                quoted=quoted or language in CONFIG_LANGUAGES,
            ):
                yield match.span(group)


def _bare_ok(line: str, match: re.Match[str], language: str | None) -> bool:
    if language in CODE_LANGUAGES:
        return False
    if language in TEXT_LANGUAGES:
        return looks_random(match.group("bv"))
    return True


def _value_ok(name: str, value: str, quoted: bool) -> bool:
    """Weak names (`…key`) and unquoted prose values need a value that looks random; a
    bare `key` holding a dotted identifier (`key="app.feature.flag"`) names a setting."""
    bare = name.strip("\"'")
    if bare.lower() == "key" and _DOTTED.fullmatch(value):
        return False
    if _WEAK_NAME.match(bare) or not quoted:
        return looks_random(value) or bool(re.fullmatch(UUID, value))
    return True


def _is_setter(name: str, language: str | None) -> bool:
    """`setPassword("...")` passes a secret; `get_secret("name")` only names one."""
    last = name.rsplit(".", 1)[-1]
    return language in CODE_LANGUAGES and bool(_SETTER.match(last))


def looks_random(value: str) -> bool:
    """At least 8 characters mixing classes (letters, digits, symbols), or 16 of letters
    mixing cases: not a word someone would write in prose."""
    if len(value) < 8:
        return False
    classes = (
        any(c.islower() for c in value),
        any(c.isupper() for c in value),
        any(c.isdigit() for c in value),
        any(not c.isalnum() for c in value),
    )
    has_digit_or_symbol = classes[2] or classes[3]
    return (sum(classes) >= 2 and has_digit_or_symbol) or (len(value) >= 16 and sum(classes) >= 2)


class NetrcDetector(Detector):
    """`.netrc` entries: `machine HOST login USER password SECRET`, on one line or many."""

    name = "NetrcDetector"
    secret_type = KEYWORD_TYPE
    keywords = ("machine",)
    mode = "text"
    priority = PRIORITY_ASSIGNED
    _ENTRY = re.compile(
        r"\bmachine[ \t]+\S+(?:\s+(?:login|account)[ \t]+\S+)+\s+password[ \t]+(?P<v>[^\s\"'`]+)"
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for match in self._ENTRY.finditer(text):
            yield match.span("v")


class DiscordBotTokenDetector(Detector):
    """Discord bot tokens: base64 of the bot's numeric id `.` 6 `.` 27-38 characters.

    Found in runs of token characters (no keyword needed); the first part must decode to
    a 17-20 digit id, which is what keeps other dotted strings out."""

    name = "DiscordBotTokenDetector"
    secret_type = "Discord Bot Token"
    mode = "run"
    min_run = 59
    _REGEX = re.compile(
        r"(?<![A-Za-z0-9_\-])[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38}"
        r"(?![A-Za-z0-9_\-])"
    )

    def run_spans(
        self, text: str, start: int, end: int, inner: Inner
    ) -> Iterator[tuple[Span, str]]:
        for match in self._REGEX.finditer(text, start, end):
            if _is_snowflake(match.group(0).split(".", 1)[0]):
                yield match.span(), self.secret_type


def _is_snowflake(part: str) -> bool:
    try:
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return False
    return 17 <= len(decoded) <= 20 and decoded.isdigit()


class XmlElementDetector(Detector):
    """XML elements named like a secret (`<password>…</password>`), the value on the
    same line as the tags or on a line of its own."""

    name = "XmlElementDetector"
    secret_type = KEYWORD_TYPE
    keywords = ("pass", "pwd", "secret", "token", "key", "credential", "contrase", "auth")
    mode = "text"
    priority = PRIORITY_ASSIGNED

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        closing = (m.group(1) for m in _XML_CLOSE.finditer(text))
        if "</" not in text or not any(_STRONG_NAME.search(name) for name in closing):
            return
        for match in _XML_ELEMENT.finditer(text):
            name = match.group("name")
            if not is_benign_name(name) and _value_ok(name, match.group("v"), quoted=False):
                yield match.span("v")


class IniContinuationDetector(Detector):
    """INI values continued on indented lines: `password =` and the value below it."""

    name = "IniContinuationDetector"
    secret_type = KEYWORD_TYPE
    keywords = ("pass", "pwd", "secret", "token", "key", "credential")
    mode = "text"
    priority = PRIORITY_ASSIGNED
    languages = frozenset({"ini"})
    _REGEX = re.compile(
        rf"^[ \t]*[\w.\-]*(?i:{_STRONG})[\w.\-]*[ \t]*[=:][ \t]*\r?\n[ \t]+(?P<v>\S+)[ \t]*\r?$",
        re.MULTILINE,
    )

    def spans(self, text: str, language: str | None) -> Iterator[Span]:
        for match in self._REGEX.finditer(text):
            yield match.span("v")


# --------------------------------------------------------------------------------------
# Runs of token characters: high-entropy strings and encoded secrets.
# --------------------------------------------------------------------------------------


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s character distribution."""
    counts = Counter(value)
    total = len(value)
    return -sum(c / total * math.log2(c / total) for c in counts.values())


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def _quoted(text: str, start: int, end: int) -> bool:
    quote = text[start - 1] if start else ""
    return quote in ("'", '"') and end < len(text) and text[end] == quote


class Base64HighEntropyString(Detector):
    """Quoted base64-alphabet strings above 4.5 bits of entropy per character."""

    name = "Base64HighEntropyString"
    secret_type = "Base64 High Entropy String"
    mode = "run"
    min_run = 20
    priority = PRIORITY_GENERIC
    limit = 4.5

    def run_spans(
        self, text: str, start: int, end: int, inner: Inner
    ) -> Iterator[tuple[Span, str]]:
        value = text[start:end]
        if not (_quoted(text, start, end) and _B64_CHARS.issuperset(value)):
            return
        if not _HEX_CHARS.issuperset(value) and shannon_entropy(value) > self.limit:
            yield (start, end), self.secret_type


class HexHighEntropyString(Detector):
    """Quoted hex strings above 3 bits of entropy per character."""

    name = "HexHighEntropyString"
    secret_type = "Hex High Entropy String"
    mode = "run"
    min_run = 20
    priority = PRIORITY_GENERIC
    limit = 3.0

    def run_spans(
        self, text: str, start: int, end: int, inner: Inner
    ) -> Iterator[tuple[Span, str]]:
        value = text[start:end]
        if not (_quoted(text, start, end) and _HEX_CHARS.issuperset(value)):
            return
        if not value.isdigit() and shannon_entropy(value) > self.limit:
            yield (start, end), self.secret_type


_INNER_TYPES = frozenset(
    {KEYWORD_TYPE, "JSON Web Token", "Private Key", "Basic Auth Credentials",
     "HTTP Authorization Credentials"}
)  # fmt: skip
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_WORDY = re.compile(r"[A-Za-z_.~]*")
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_\-]{16,}={0,2}")


class EncodedSecretDetector(Detector):
    """Secrets inside base64, hex or percent-encoded blobs, up to `layers` deep.

    The span is the encoded blob's span in the original text (every character that
    carries a bit of the secret is inside it), and the type is the inner secret's.
    """

    name = "EncodedSecretDetector"
    secret_type = "Encoded Secret"
    mode = "run"
    min_run = 16
    priority = PRIORITY_PROVIDER
    layers = 3

    def secret_types(self) -> frozenset[str]:
        return PROVIDER_TYPES | _INNER_TYPES

    def run_spans(
        self, text: str, start: int, end: int, inner: Inner
    ) -> Iterator[tuple[Span, str]]:
        for (s, e), blob in _blobs(text, start, end):
            found = inner(blob)
            if found is not None:
                yield (s, e), found


def _blobs(text: str, start: int, end: int) -> Iterator[tuple[Span, str]]:
    """(span, decoded text) of the encoded blobs in a run."""
    value = text[start:end]
    if _WORDY.fullmatch(value):
        return  # letters, `_`, `.` and `~` only: every base64 match in it would be skipped
    if "%" in value:
        if len(_PERCENT.findall(value)) >= 3:
            yield (start, end), unquote(value)
        return
    for match in _B64_RUN.finditer(value):
        if match.group(0).replace("_", "").isalpha():
            continue  # an identifier; base64 of a secret of 12+ characters has a digit
        decoded = decode_blob(match.group(0))
        if decoded is not None:
            yield (start + match.start(), start + match.end()), decoded


def decode_blob(value: str) -> str | None:
    """The printable text a hex or base64 blob encodes, or None."""
    raw: bytes | None = None
    if len(value) >= 32 and len(value) % 2 == 0 and _HEX_CHARS.issuperset(value):
        raw = bytes.fromhex(value)
    elif len(value) >= 16 and _mixed(value):
        try:
            raw = base64.b64decode(
                _padded(value), altchars=b"-_" if "-" in value or "_" in value else None
            )
        except (binascii.Error, ValueError):
            return None
    if raw is None:
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t" for c in decoded)
    return decoded if printable >= 0.95 * len(decoded) else None


def _mixed(value: str) -> bool:
    return any(c.isupper() for c in value) and any(c.islower() for c in value)


def _padded(value: str) -> str:
    body = value.rstrip("=")
    return body + "=" * (-len(body) % 4)


# --------------------------------------------------------------------------------------
# The registry.
# --------------------------------------------------------------------------------------

SPECIAL_DETECTORS: tuple[type[Detector], ...] = (
    AuthorizationHeaderDetector,
    Base64HighEntropyString,
    ConnectionStringDetector,
    CurlCredentialDetector,
    DiscordBotTokenDetector,
    EmailDetector,
    EncodedSecretDetector,
    HexHighEntropyString,
    IPAddressDetector,
    IniContinuationDetector,
    JwtDetector,
    KeywordDetector,
    KubernetesSecretDetector,
    NetrcDetector,
    PrivateKeyDetector,
    XmlElementDetector,
)


# Names that policies and `--detector` used before the provider table, and detect-secrets'
# plugin names that we replace: each stands for the detectors that now do its work.
ALIASES: dict[str, tuple[str, ...]] = {
    "BasicAuthDetector": ("ConnectionStringDetector",),
    "IPPublicDetector": ("IPAddressDetector",),
    "JwtTokenDetector": ("JwtDetector",),
    "KeywordAssignmentDetector": ("KeywordDetector", "XmlElementDetector"),
    "PrivateKeyBlockDetector": ("PrivateKeyDetector",),
    "SlackDetector": ("SlackTokenDetector", "SlackWebhookDetector"),
    "StripeKeyDetector": ("StripeDetector",),
}


def resolve_aliases(names: Iterable[str]) -> list[str]:
    """`names` with every old name replaced by its detectors (noted at -v)."""
    resolved: list[str] = []
    for name in names:
        targets = ALIASES.get(name, (name,))
        if name in ALIASES:
            log.info("detector %s is now %s (the old name still works)", name, ", ".join(targets))
        resolved.extend(targets)
    return resolved


def expand_switches(switches: Mapping[str, bool]) -> dict[str, bool]:
    """A policy's `detectors:` switches with every old name replaced by its detectors."""
    return {target: on for name, on in switches.items() for target in resolve_aliases([name])}


@lru_cache(maxsize=1)
def _all_detectors() -> tuple[Detector, ...]:
    detectors = [RuleDetector(rule) for rule in RULES] + [cls() for cls in SPECIAL_DETECTORS]
    return tuple(sorted(detectors, key=lambda d: d.name))


def detector_names() -> list[str]:
    """The names of every registered detector, sorted."""
    return [d.name for d in _all_detectors()]


def secret_types(names: Sequence[str] | None = None) -> list[str]:
    """Every secret type that the named detectors (default: all) can report, sorted."""
    return sorted(set().union(*(d.secret_types() for d in build_detectors(names))))


def select_detectors(switches: Mapping[str, bool]) -> tuple[str, ...] | None:
    """A policy's `detectors: {name: on/off}` as a selection for `build_detectors`.

    Every detector is on unless switched off; `{}` (or only `true`s) means all of them.
    An unknown name is an InputError that lists the valid ones.
    """
    names = detector_names()
    resolved = expand_switches(switches)
    unknown = sorted(set(resolved) - set(names))
    if unknown:
        raise InputError(_unknown(unknown, names))
    if all(resolved.values()):
        return None
    return tuple(n for n in names if resolved.get(n, True))


def build_detectors(names: Sequence[str] | None = None) -> list[Detector]:
    """The registered detectors, or the named ones; an unknown name lists the valid ones."""
    detectors = _all_detectors()
    if names is None:
        return list(detectors)
    by_name = {d.name: d for d in detectors}
    names = resolve_aliases(names)
    unknown = sorted(set(names) - by_name.keys())
    if unknown:
        raise InputError(_unknown(unknown, sorted(by_name)))
    return [by_name[n] for n in sorted(set(names))]


def _unknown(unknown: Sequence[str], names: Sequence[str]) -> str:
    """An unknown detector name, its close matches, and where to see them all."""
    return (
        f"unknown detector {', '.join(unknown)}{close_matches(unknown[0], names)} "
        f"(valid: {', '.join(names)})"
    )
