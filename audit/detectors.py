"""Secret detectors: detect-secrets plugins and our own, all reporting exact spans.

Every detector is a detect-secrets plugin (its built-in ones, or our own
`RegexBasedDetector` subclasses below), wrapped in a `Detector` adapter that reports
the character span of each secret in a line instead of its value, because
detect-secrets' own answers are not always the secret: the GitHub and GitLab plugins
return only the prefix group, the private-key plugin only the header, and a
`PotentialSecret` has no column.

Each adapter also declares prefilter hints, all matched in the lower-cased text:
`keywords` (substrings) and `triggers` (regexes that start with a literal, so that
the regex engine can skip to it), plus an optional `line_filter` regex that a line
must match before an expensive plugin runs on it. The scanner runs a detector only on
lines where one of its hints occurs, which is what makes scanning fast (detect-secrets
spends most of its time calling every plugin on every line). Hints are shared: each
distinct keyword or trigger is one pass over the text, whatever uses it.

Plugins are instantiated inside `transient_settings(...)`, never by changing
detect-secrets' global settings; `scoped_settings()` gives the same scope to the scan.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.settings import transient_settings

from audit.errors import InputError
from audit.filters import words
from audit.suggest import close_matches

Span = tuple[int, int]

# Languages whose keyword-assigned secrets must be quoted string literals: in code, an
# unquoted right-hand side is an expression (`password = get_password()`), not a value.
CODE_LANGUAGES = frozenset(
    {"python", "javascript", "typescript", "tsx", "java", "go", "ruby", "php", "c", "cpp"}
)
# Formats where a bare value after `key =` / `key:` is the value itself.
CONFIG_LANGUAGES = frozenset({"yaml", "json", "toml", "ini", "dotenv", "bash"})

PRIORITY_PROVIDER = 3  # a provider-specific format: the most specific answer
PRIORITY_ASSIGNED = 2  # a value assigned to a secret-sounding name, or a URL password
PRIORITY_GENERIC = 1  # high-entropy strings, e-mail and IP addresses
KEYWORD_TYPE = "Secret Keyword"  # detect-secrets' type for keyword-assigned values


# --------------------------------------------------------------------------------------
# Our own plugins: detect-secrets `RegexBasedDetector`s with prefilter hints.
# --------------------------------------------------------------------------------------


class OwnDetector(RegexBasedDetector):
    """Base of our plugins: a detect-secrets regex detector plus scan hints.

    `secret_group` names the regex group that holds the secret (0: the whole match);
    every pattern has at most one capturing group, so detect-secrets' own
    `analyze_string` also yields the secret itself.
    """

    secret_type: ClassVar[str]
    denylist: ClassVar[tuple[re.Pattern[str], ...]]
    keywords: ClassVar[tuple[str, ...]] = ()  # lower-case substrings
    triggers: ClassVar[tuple[str, ...]] = ()  # regexes over lower-cased text
    line_filter: ClassVar[str | None] = None
    secret_group: ClassVar[int] = 0
    priority: ClassVar[int] = PRIORITY_PROVIDER

    def accept(self, value: str) -> bool:
        """A last check on a matched value (e.g. that an IP address parses)."""
        return bool(value)


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


class GitHubFineGrainedTokenDetector(OwnDetector):
    """GitHub fine-grained personal access tokens (`github_pat_...`)."""

    secret_type = "GitHub Token"
    denylist = (_c(r"\bgithub_pat_[0-9A-Za-z_]{82}(?![0-9A-Za-z_])"),)
    keywords = ("github_pat_",)


class HuggingFaceTokenDetector(OwnDetector):
    """Hugging Face user and organization access tokens."""

    secret_type = "Hugging Face Token"
    denylist = (_c(r"(?<![0-9A-Za-z_])(?:hf_|api_org_)[0-9A-Za-z]{30,40}(?![0-9A-Za-z_])"),)
    keywords = ("hf_", "api_org_")


class GoogleApiKeyDetector(OwnDetector):
    """Google Cloud / Maps / Firebase API keys (`AIza` + 35 characters)."""

    secret_type = "Google API Key"
    denylist = (_c(r"AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),)
    keywords = ("aiza",)


class GoogleOAuthSecretDetector(OwnDetector):
    """Google OAuth client secrets (`GOCSPX-...`)."""

    secret_type = "Google OAuth Client Secret"
    denylist = (_c(r"GOCSPX-[0-9A-Za-z_\-]{28}(?![0-9A-Za-z_\-])"),)
    keywords = ("gocspx-",)


class AnthropicKeyDetector(OwnDetector):
    """Anthropic API and admin keys (`sk-ant-api03-...`)."""

    secret_type = "Anthropic API Key"
    denylist = (_c(r"sk-ant-(?:api|admin)\d\d-[0-9A-Za-z_\-]{80,120}(?![0-9A-Za-z_\-])"),)
    keywords = ("sk-",)


class OpenAIProjectKeyDetector(OwnDetector):
    """OpenAI project, service-account and admin keys, which lack the legacy marker."""

    secret_type = "OpenAI Token"
    denylist = (_c(r"sk-(?:proj|svcacct|admin)-[0-9A-Za-z_\-]{40,200}(?![0-9A-Za-z_\-])"),)
    keywords = ("sk-",)


class NpmTokenDetector(OwnDetector):
    """npm access tokens anywhere (detect-secrets only finds them in `.npmrc` lines)."""

    secret_type = "NPM tokens"
    denylist = (_c(r"(?<![0-9A-Za-z_])npm_[0-9A-Za-z]{36}(?![0-9A-Za-z_])"),)
    keywords = ("npm_",)


class ShopifyTokenDetector(OwnDetector):
    """Shopify access tokens and shared secrets."""

    secret_type = "Shopify Token"
    denylist = (_c(r"shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}(?![0-9A-Za-z_])"),)
    triggers = ("shp(?:at|ca|pa|ss)_",)


class DigitalOceanTokenDetector(OwnDetector):
    """DigitalOcean personal, OAuth and refresh tokens."""

    secret_type = "DigitalOcean Token"
    denylist = (_c(r"do[opr]_v1_[0-9a-f]{64}(?![0-9A-Za-z_])"),)
    keywords = ("_v1_",)


class SlackTokenDetector(OwnDetector):
    """Slack tokens with mixed-case tails (detect-secrets' pattern stops at upper case)."""

    secret_type = "Slack Token"
    denylist = (
        _c(r"xox[abposr]-(?:\d+-)+[0-9A-Za-z]{8,}(?![0-9A-Za-z_])"),
        _c(r"xapp-\d-[0-9A-Z]+-\d+-[0-9a-f]+(?![0-9A-Za-z_])"),
    )
    keywords = ("xox", "xapp-")


class StripeKeyDetector(OwnDetector):
    """Stripe secret and restricted keys, live and test, at their full length."""

    secret_type = "Stripe Access Key"
    denylist = (_c(r"[rs]k_(?:live|test)_[0-9A-Za-z]{24,247}(?![0-9A-Za-z_])"),)
    triggers = ("k_(?:live|test)_",)


class AWSSecretKeyDetector(OwnDetector):
    """AWS secret access keys assigned to their usual names, quoted or not."""

    secret_type = "AWS Access Key"
    denylist = (
        _c(
            r"aws_?secret_?(?:access_?)?key[\"'\]]*\s*(?:=|:|=>)\s*[\"']?"
            r"([0-9A-Za-z/+]{40})(?![0-9A-Za-z/+=])",
            re.IGNORECASE,
        ),
    )
    keywords = ("aws",)
    line_filter = r"aws_?secret"
    secret_group = 1


class DatabricksTokenDetector(OwnDetector):
    """Databricks personal access tokens."""

    secret_type = "Databricks Token"
    denylist = (_c(r"(?<![0-9A-Za-z_])dapi[0-9a-f]{32}(?:-\d)?(?![0-9A-Za-z_])"),)
    keywords = ("dapi",)


class PostmanKeyDetector(OwnDetector):
    """Postman API keys."""

    secret_type = "Postman API Key"
    denylist = (_c(r"PMAK-[0-9a-f]{24}-[0-9a-f]{34}(?![0-9A-Za-z_])"),)
    keywords = ("pmak-",)


class JwtDetector(OwnDetector):
    """JSON Web Tokens with their signature (detect-secrets' span stops after the payload)."""

    secret_type = "JSON Web Token"
    denylist = (
        _c(r"(?<![0-9A-Za-z_\-])eyJ[0-9A-Za-z_\-]{8,}\.eyJ[0-9A-Za-z_\-]{8,}\.[0-9A-Za-z_\-]*"),
    )
    keywords = ("eyj",)

    def accept(self, value: str) -> bool:
        header = value.split(".", 1)[0]
        try:
            decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
            return isinstance(json.loads(decoded), dict)
        except (binascii.Error, ValueError):
            return False


class EmailDetector(OwnDetector):
    """E-mail addresses: personal data that models memorize from comments and headers."""

    secret_type = "Email Address"
    denylist = (
        _c(
            r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-])"
        ),
    )
    keywords = ("@",)
    priority = PRIORITY_GENERIC
    # File names such as `icon@2x.png` look like addresses.
    _NOT_TLDS = words(
        """png jpg jpeg gif svg webp ico js mjs ts css scss html htm py rb go java json
        yaml yml xml txt md rst lock map min"""
    )

    def accept(self, value: str) -> bool:
        local, _, domain = value.rpartition("@")
        tld = domain.rsplit(".", 1)[-1].lower()
        return bool(local) and tld not in self._NOT_TLDS and ".." not in value


class IPAddressDetector(OwnDetector):
    """IPv4 and IPv6 addresses (detect-secrets' plugin finds only IPv4)."""

    secret_type = "IP Address"
    denylist = (
        _c(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)"),
        _c(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
    )
    triggers = (r"\.\d{1,3}\.\d{1,3}\.", r":[0-9a-f]{0,4}:")
    priority = PRIORITY_GENERIC

    def accept(self, value: str) -> bool:
        if ":" in value and value.count(":") < 2:
            return False
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True


class ConnectionStringDetector(OwnDetector):
    """Passwords in URLs (`scheme://user:PASSWORD@host`) and `Password=...;` strings."""

    secret_type = "Basic Auth Credentials"
    denylist = (
        _c(r"\b[A-Za-z][A-Za-z0-9+.\-]{0,20}://[^\s:/@'\"`]{1,64}:([^\s@'\"`/]{1,128})@[\w\-\[]"),
        _c(r"(?<![\w])(?:password|pwd)\s*=\s*([^;'\"\s]{1,128})(?=;)", re.IGNORECASE),
    )
    keywords = ("://", "pass", "pwd")
    line_filter = r"://|password|pwd"
    secret_group = 1
    priority = PRIORITY_ASSIGNED


_KEYWORD_NAMES = (
    r"pass(?:word|wd|phrase)|pwd|secret|token|api_?key|apikey|access_?key|auth_?key|"
    r"private_?key|priv_?key|client_?key|credentials?|db_?pass|contrase(?:ñ|n)a"
)


_SETTER = re.compile(r"(?:set|with|use|update|put)_?[A-Za-z]", re.IGNORECASE)


class KeywordAssignmentDetector(OwnDetector):
    """Values assigned to secret-sounding names: `password = "..."`, `API_TOKEN=...`.

    Unlike detect-secrets' KeywordDetector it also knows `token`, `credentials` and
    `.env`/shell assignments, accepts type annotations (`password: str = "..."`) and
    reports the value's exact span. In code, only quoted values count.
    """

    secret_type = KEYWORD_TYPE
    _ASSIGN = (
        r"(?<![\w$@.\-])(?P<name>(?:[A-Za-z_$@][\w$@.\-]{0,60}?)?(?:"
        + _KEYWORD_NAMES
        + r")[\w.\-]{0,60})"
        r"(?:\[\d*\])?[\"'\]]{0,2}\s*(?::\s*[A-Za-z_][\w.\[\], |]*?\s*(?==))?"
        r"(?P<op>:=|=>|===?|!==?|=|:|\()\s*(?:[rRbBuUfF]{1,2}(?=[\"'])|@(?=\"))?"
    )
    _QUOTED = r"(?P<q>[\"'`])(?P<qv>(?:(?!(?P=q))[^\n\\]){1,256})(?P=q)"
    _BARE = r"(?P<bv>[^\s\"'`,;#(){}\[\]<>]{1,256})(?=\s*(?:$|[,;}\]]|#))"
    denylist = (_c(_ASSIGN + "(?:" + _QUOTED + "|" + _BARE + ")", re.IGNORECASE),)
    keywords = ("pass", "pwd", "secret", "token", "key", "credential", "contrase")
    line_filter = _KEYWORD_NAMES
    priority = PRIORITY_ASSIGNED

    def assignments(self, line: str, language: str | None) -> Iterator[Span]:
        """Spans of the values assigned to secret-sounding names on one line."""
        bare_ok = language in CONFIG_LANGUAGES
        for match in self.denylist[0].finditer(line):
            group = "qv" if match.group("qv") is not None else "bv"
            if group == "bv" and not bare_ok:
                continue
            if match.group("op") == "(" and not self._is_setter(match.group("name"), language):
                continue
            yield match.span(group)

    @staticmethod
    def _is_setter(name: str, language: str | None) -> bool:
        """`setPassword("...")` passes a secret; `get_secret("name")` only names one."""
        last = name.rsplit(".", 1)[-1]
        return language in CODE_LANGUAGES and bool(_SETTER.match(last))

    def analyze_string(self, string: str) -> Generator[str, None, None]:
        for start, end in self.assignments(string, None):
            yield string[start:end]


class PrivateKeyBlockDetector(OwnDetector):
    """PEM private keys, spanning the whole block: the body is what a model memorizes.

    As a detect-secrets plugin it flags the header line; the scanner runs `blocks()`
    on the whole text, since a block spans many lines.
    """

    secret_type = "Private Key"
    denylist = (_c(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),)
    keywords = ("private key",)
    _BLOCK = _c(
        r"-----BEGIN (?P<label>(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:.{0,16384}?-----END (?P=label)-----"
        r"|(?:(?:\\[nr]|\s)+(?:[A-Za-z0-9+/=]{16,}|[A-Za-z\-]+: [^\n\\]*))+)",
        re.DOTALL,
    )

    def blocks(self, text: str) -> Iterator[Span]:
        """Spans of every private-key block; an unterminated block runs to its body's end."""
        for match in self._BLOCK.finditer(text):
            start, end = match.span()
            while end > start and (text[end - 1].isspace() or text[end - 2 : end] == "\\n"):
                end -= 2 if text[end - 2 : end] == "\\n" else 1
            yield start, end


OWN_PLUGINS: tuple[type[OwnDetector], ...] = (
    AWSSecretKeyDetector,
    AnthropicKeyDetector,
    ConnectionStringDetector,
    DatabricksTokenDetector,
    DigitalOceanTokenDetector,
    EmailDetector,
    GitHubFineGrainedTokenDetector,
    GoogleApiKeyDetector,
    GoogleOAuthSecretDetector,
    HuggingFaceTokenDetector,
    IPAddressDetector,
    JwtDetector,
    KeywordAssignmentDetector,
    NpmTokenDetector,
    OpenAIProjectKeyDetector,
    PostmanKeyDetector,
    PrivateKeyBlockDetector,
    ShopifyTokenDetector,
    SlackTokenDetector,
    StripeKeyDetector,
)


# --------------------------------------------------------------------------------------
# detect-secrets' built-in plugins: which ones, with which settings and hints.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hints:
    """Where a detector can match: lines holding one of these (see module docstring)."""

    keywords: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    line_filter: str | None = None
    priority: int = PRIORITY_PROVIDER


_B64 = r"A-Za-z0-9+/\\\-_="
# Built-in plugins we use, with their settings ({} = detect-secrets' defaults).
# Left out, because ours report the whole secret where theirs report a part:
# IPPublicDetector (IPv4 only), PrivateKeyDetector (header only), JwtTokenDetector
# (span ends before the signature).
BUILTIN_PLUGINS: dict[str, tuple[dict[str, Any], Hints]] = {
    "ArtifactoryDetector": ({}, Hints(triggers=(r"akc[a-z0-9]{10}", r"ap[\da-f][a-z0-9]{8}"))),
    "AWSKeyDetector": (
        {},
        Hints(keywords=("aws",), triggers=(r"a(?:kia|sia|bia|cca|3t[a-z0-9])[a-z0-9]{16}",)),
    ),
    "AzureStorageKeyDetector": ({}, Hints(keywords=("accountkey=",))),
    "BasicAuthDetector": ({}, Hints(keywords=("://",), priority=PRIORITY_ASSIGNED)),
    "CloudantDetector": (
        {},
        Hints(triggers=(r"cl(?:oudant|ou)?[_-]?(?:api)?(?:key|pw|pass|token)", r"cloudant\.com")),
    ),
    "DiscordBotTokenDetector": ({}, Hints(triggers=(r"\.[\w\-]{6}\.[\w\-]{27}",))),
    "GitHubTokenDetector": ({}, Hints(triggers=(r"gh[pousr]_",))),
    "GitLabTokenDetector": (
        {},
        Hints(
            keywords=("gr1348941",),
            triggers=(r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-",),
        ),
    ),
    "Base64HighEntropyString": (
        {"limit": 4.5},
        # one regex per quote: a literal first character lets the engine skip ahead
        Hints(triggers=(rf'"[{_B64}]{{23,}}"', rf"'[{_B64}]{{23,}}'"), priority=PRIORITY_GENERIC),
    ),
    "HexHighEntropyString": (
        {"limit": 3.0},
        Hints(triggers=(r'"[0-9a-f]{9,}"', r"'[0-9a-f]{9,}'"), priority=PRIORITY_GENERIC),
    ),
    "IbmCloudIamDetector": ({}, Hints(keywords=("key", "pwd", "pass", "token"))),
    "IbmCosHmacDetector": ({}, Hints(triggers=(r"secret[-_]?(?:access)?[-_]?key",))),
    "KeywordDetector": (
        {"keyword_exclude": ""},
        Hints(
            keywords=("key", "pass", "pwd", "secret", "contrase"),
            line_filter=(
                r"(?:api|auth|service|account|db|database|priv|private|client)_?key|"
                r"(?:db|database|key)_?pass|passw|pwd|secret|contrase"
            ),
            priority=PRIORITY_ASSIGNED,
        ),
    ),
    "MailchimpDetector": ({}, Hints(keywords=("-us",))),
    "NpmDetector": ({}, Hints(keywords=("_authtoken",))),
    "OpenAIDetector": ({}, Hints(keywords=("t3blbkfj",))),
    "PypiTokenDetector": ({}, Hints(keywords=("pypi-ag",))),
    "SendGridDetector": ({}, Hints(keywords=("sg.",))),
    "SlackDetector": ({}, Hints(keywords=("xox", "hooks.slack.com"))),
    "SoftlayerDetector": (
        {},
        Hints(
            triggers=(r"s(?:oftlayer|l)[_-]?(?:api)?[_-]?(?:key|pwd|pass|token)",),
            keywords=("softlayer.com",),
        ),
    ),
    "SquareOAuthDetector": ({}, Hints(keywords=("sq0csp-",))),
    "StripeDetector": ({}, Hints(keywords=("k_live_",))),
    "TelegramBotTokenDetector": ({}, Hints(triggers=(r":[0-9a-z_\-]{35}",))),
    "TwilioKeyDetector": ({}, Hints(triggers=(r"ac[a-z0-9]{32}", r"sk[a-z0-9]{32}"))),
}
# Patterns that match a label before the secret: the span starts after it.
_LABELS = {"AzureStorageKeyDetector": "AccountKey="}
# These return a prefix group from findall, not the secret: take the whole match.
_WHOLE_MATCH = frozenset({"GitHubTokenDetector", "GitLabTokenDetector"})
_LONG_WORD = re.compile(r"\w{100}")
# Delimiters some built-in patterns include in their match (Artifactory, npm).
_LEAD = " \t\"'`=:"
_TRAIL = " \t\"'`,;"


def _settings_config() -> dict[str, Any]:
    plugins = [{"name": name, **settings} for name, (settings, _) in BUILTIN_PLUGINS.items()]
    return {"plugins_used": plugins}


def scoped_settings() -> AbstractContextManager[Any]:
    """detect-secrets settings for the duration of a scan, restored afterwards."""
    return transient_settings(_settings_config())


# --------------------------------------------------------------------------------------
# Adapters: one interface over every plugin.
# --------------------------------------------------------------------------------------


class Detector(ABC):
    """A plugin as the scanner sees it: a name, a type, hints, and spans in a line."""

    multiline: ClassVar[bool] = False

    def __init__(self, plugin: Any, name: str, hints: Hints) -> None:
        self.plugin = plugin
        self.name = name
        self.secret_type: str = plugin.secret_type
        self.priority = hints.priority
        self.keywords = tuple(k.lower() for k in hints.keywords)
        self.triggers = hints.triggers
        self.line_filter = re.compile(hints.line_filter) if hints.line_filter else None

    def __repr__(self) -> str:
        return f"<Detector {self.name}: {self.secret_type}>"

    @abstractmethod
    def spans(self, line: str, filename: str, language: str | None) -> Iterator[Span]:
        """Character spans of the secrets in `line` (or in the whole text if multiline)."""


class RegexSpans(Detector):
    """A `RegexBasedDetector`: every match of its denylist, at the secret's group."""

    def __init__(self, plugin: Any, name: str, hints: Hints, group: int | None = None) -> None:
        super().__init__(plugin, name, hints)
        self.group = group
        self.accept = getattr(plugin, "accept", None)
        self.label = _LABELS.get(name, "")

    def spans(self, line: str, filename: str, language: str | None) -> Iterator[Span]:
        for regex in self.plugin.denylist:
            group = self.group if self.group is not None else (1 if regex.groups else 0)
            for match in regex.finditer(line):
                start, end = _trim(line, *match.span(group))
                if self.label and line.startswith(self.label, start):
                    start += len(self.label)
                if end > start and (self.accept is None or self.accept(line[start:end])):
                    yield start, end


class EntropySpans(Detector):
    """detect-secrets' high-entropy plugins: quoted strings above the entropy limit."""

    def spans(self, line: str, filename: str, language: str | None) -> Iterator[Span]:
        plugin = self.plugin
        for match in plugin.regex.finditer(line):
            if plugin.calculate_shannon_entropy(match.group(2)) > plugin.entropy_limit:
                yield match.span(2)


class ValueSpans(Detector):
    """Plugins that report only values (detect-secrets' KeywordDetector): locate them.

    Its patterns follow a keyword with `\\w*`, which backtracks quadratically through a
    long run of word characters (a 2,000-character run of `password` takes over a
    second). Such a line holds no `keyword = value` it could find, so it is skipped.
    """

    def spans(self, line: str, filename: str, language: str | None) -> Iterator[Span]:
        if _LONG_WORD.search(line):
            return
        for secret in self.plugin.analyze_line(filename=filename, line=line, line_number=0):
            value = secret.secret_value
            if value:
                yield from locate(line, value)


class AssignmentSpans(Detector):
    """Our keyword-assignment plugin, which needs the file's language."""

    def spans(self, line: str, filename: str, language: str | None) -> Iterator[Span]:
        return self.plugin.assignments(line, language)  # type: ignore[no-any-return]


class BlockSpans(Detector):
    """Our private-key plugin, run once over the whole text."""

    multiline = True

    def spans(self, line: str, filename: str, language: str | None) -> Iterator[Span]:
        return self.plugin.blocks(line)  # type: ignore[no-any-return]


def locate(line: str, value: str) -> Iterator[Span]:
    """Every occurrence of `value` in `line` that is not part of a longer word."""
    start = line.find(value)
    while start >= 0:
        end = start + len(value)
        before = line[start - 1] if start else " "
        after = line[end] if end < len(line) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            yield start, end
        start = line.find(value, start + 1)


def _trim(line: str, start: int, end: int) -> Span:
    while start < end and line[start] in _LEAD:
        start += 1
    while end > start and line[end - 1] in _TRAIL:
        end -= 1
    return start, end


def _own_detector(plugin_class: type[OwnDetector]) -> Detector:
    plugin = plugin_class()
    hints = Hints(
        keywords=plugin.keywords,
        triggers=plugin.triggers,
        line_filter=plugin.line_filter,
        priority=plugin.priority,
    )
    name = plugin_class.__name__
    if isinstance(plugin, KeywordAssignmentDetector):
        return AssignmentSpans(plugin, name, hints)
    if isinstance(plugin, PrivateKeyBlockDetector):
        return BlockSpans(plugin, name, hints)
    return RegexSpans(plugin, name, hints, group=plugin.secret_group)


def _builtin_detector(plugin: Any) -> Detector:
    name = type(plugin).__name__
    hints = BUILTIN_PLUGINS[name][1]
    if name in ("Base64HighEntropyString", "HexHighEntropyString"):
        return EntropySpans(plugin, name, hints)
    if name == "KeywordDetector":
        return ValueSpans(plugin, name, hints)
    return RegexSpans(plugin, name, hints, group=0 if name in _WHOLE_MATCH else None)


@lru_cache(maxsize=1)
def _all_detectors() -> tuple[Detector, ...]:
    from detect_secrets.settings import get_plugins

    with scoped_settings():
        builtin = [_builtin_detector(plugin) for plugin in get_plugins()]
    own = [_own_detector(cls) for cls in OWN_PLUGINS]
    return tuple(sorted(builtin + own, key=lambda d: d.name))


def detector_names() -> list[str]:
    """The names of every registered detector (plugin class names), sorted."""
    return [d.name for d in _all_detectors()]


def select_detectors(switches: Mapping[str, bool]) -> tuple[str, ...] | None:
    """A policy's `detectors: {name: on/off}` as a selection for `build_detectors`.

    Every detector is on unless switched off; `{}` (or only `true`s) means all of them.
    An unknown name is an InputError that lists the valid ones.
    """
    names = detector_names()
    unknown = sorted(set(switches) - set(names))
    if unknown:
        raise InputError(_unknown(unknown, names))
    if all(switches.values()):
        return None
    return tuple(n for n in names if switches.get(n, True))


def build_detectors(names: Sequence[str] | None = None) -> list[Detector]:
    """The registered detectors, or the named ones; an unknown name lists the valid ones."""
    detectors = _all_detectors()
    if names is None:
        return list(detectors)
    by_name = {d.name: d for d in detectors}
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
