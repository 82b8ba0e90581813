"""The demo corpus: real code nobody here wrote, with fake secrets planted in it.

The code is excerpts of the running Python's standard library (found with
``sysconfig``). Into a fixed subset of the excerpts, and into a few generated ``.env``
and YAML files, fake secrets of several types are planted where real ones turn up: a
config constant, a client constructor, a connection string, a comment with an e-mail
address. Every planted sample is repeated (``forks/<k>/<path>``): duplication is what
makes models memorize in real corpora. A held-out split holds clean excerpts and
*control* samples with secrets of the same shapes that the model never sees.

Every value is drawn from a seeded ``random.Random``: the same seed gives the same
corpus (on the same Python version, whose standard library is the code). Values are
random, never real keys and never the providers' documented example keys.
"""

from __future__ import annotations

import ast
import io
import os
import random
import string
import sysconfig
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from audit.findings import Context, Finding

DETECTOR = "demo-planted"

_ALNUM = string.ascii_letters + string.digits
# Standard-library folders that are tests, demos or vendored code rather than library code.
_SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "lib2to3", "turtledemo", "__pycache__"}
)


def _chars(alphabet: str, n: int) -> Callable[[random.Random], str]:
    return lambda rng: "".join(rng.choice(alphabet) for _ in range(n))


def _prefixed(prefix: str, alphabet: str, n: int) -> Callable[[random.Random], str]:
    body = _chars(alphabet, n)
    return lambda rng: prefix + body(rng)


def _slack_token(rng: random.Random) -> str:
    digits = _chars(string.digits, 11)
    return f"xoxb-{digits(rng)}-{digits(rng)}-{_chars(_ALNUM, 24)(rng)}"


# Made-up names for the text around a secret (and for e-mail addresses).
_FIRST_NAMES = ("Ada", "Bela", "Chidi", "Dana", "Emil", "Farah", "Goran", "Hana", "Ines", "Jonas")
_LAST_NAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Castell", "Novak", "Brandt", "Silva")
_PROJECTS = ("atlas", "billing", "courier", "ledger", "orbit", "pylon", "relay", "tessera")
_ROLES = ("api", "worker", "sync", "admin", "jobs", "edge")
_REGIONS = ("us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2")
_USERS = ("app", "svc_reports", "deploy", "etl")
_SYLLABLES = ("bra", "cor", "dal", "ven", "tri", "mo", "lux", "quin", "sor", "tal", "zen", "fi")


def _email(rng: random.Random) -> str:
    first = rng.choice(_FIRST_NAMES).lower()
    last = rng.choice(_LAST_NAMES).lower()
    domain = "".join(rng.choice(_SYLLABLES) for _ in range(3))
    return f"{first}.{last}{rng.randrange(10, 100)}@{domain}.{rng.choice(('io', 'com', 'dev'))}"


@dataclass(frozen=True)
class SecretKind:
    """One shape of secret and the place in code where it is planted."""

    name: str
    secret_type: str  # detect-secrets' name for the type where it has one
    make: Callable[[random.Random], str] = field(repr=False)
    place: str  # "python" (inside a stdlib excerpt), or a generated file: "env", "yaml", "json"
    template: str  # the planted lines; {secret} marks the value, other fields are fillers
    context: Context


_PY_STRING = "string"
KINDS: dict[str, SecretKind] = {
    k.name: k
    for k in (
        SecretKind(
            "aws_access_key_id",
            "AWS Access Key",
            _prefixed("AKIA", string.ascii_uppercase + "234567", 16),
            "python",
            '# AWS credentials for the {project} uploader\nAWS_ACCESS_KEY_ID = "{secret}"\n'
            'AWS_DEFAULT_REGION = "{region}"\n',
            Context(_PY_STRING, "AWS_ACCESS_KEY_ID", "assignment"),
        ),
        SecretKind(
            "aws_secret_access_key",
            "AWS Access Key",
            _chars(_ALNUM + "/+", 40),
            "python",
            's3 = boto3.client(\n    "s3",\n    region_name="{region}",\n'
            '    aws_secret_access_key="{secret}",\n)\n',
            Context(_PY_STRING, "aws_secret_access_key", "keyword_argument"),
        ),
        SecretKind(
            "github_token",
            "GitHub Token",
            _prefixed("ghp_", _ALNUM, 36),
            "env",
            "# {project} release bot\nDEBUG=false\nPORT={port}\nGITHUB_TOKEN={secret}\n"
            "LOG_LEVEL=info\n",
            Context("config_value", "GITHUB_TOKEN", "dotenv"),
        ),
        SecretKind(
            "slack_token",
            "Slack Token",
            _slack_token,
            "yaml",
            '{project}:\n  notifications:\n    slack:\n      channel: "#{project}-alerts"\n'
            "      bot_token: {secret}\n      username: {project}-bot\n",
            Context("config_value", "bot_token", "yaml"),
        ),
        SecretKind(
            "stripe_key",
            "Stripe Access Key",
            _prefixed("sk_live_", _ALNUM, 24),
            "python",
            'stripe.api_key = "{secret}"  # {project} billing\n',
            Context(_PY_STRING, "stripe.api_key", "assignment"),
        ),
        SecretKind(
            "google_api_key",
            "Google API Key",
            _prefixed("AIza", _ALNUM + "_-", 35),
            "python",
            'gmaps = googlemaps.Client(key="{secret}")\n',
            Context(_PY_STRING, "key", "keyword_argument"),
        ),
        SecretKind(
            "hf_token",
            "Hugging Face Token",
            _prefixed("hf_", string.ascii_letters, 34),
            "python",
            'hub = HfApi(endpoint="https://huggingface.co", token="{secret}")\n',
            Context(_PY_STRING, "token", "keyword_argument"),
        ),
        SecretKind(
            "email",
            "Email Address",
            _email,
            "python",
            "# Ask {first} {last} <{secret}> before changing the {project} defaults.\n",
            Context("comment", None, "comment"),
        ),
        SecretKind(
            "db_password",
            "Basic Auth Credentials",
            _chars(_ALNUM, 16),
            "python",
            'DATABASE_URL = "postgresql://{user}:{secret}@db.{project}.internal:5432/{project}"\n',
            Context(_PY_STRING, "DATABASE_URL", "assignment"),
        ),
        SecretKind(
            "password",
            "Secret Keyword",
            _chars(_ALNUM + "!#%*", 14),
            "python",
            'SMTP_USER = "{user}"\nSMTP_PASSWORD = "{secret}"\n',
            Context(_PY_STRING, "SMTP_PASSWORD", "assignment"),
        ),
        SecretKind(
            "yaml_password",
            "Secret Keyword",
            _chars(_ALNUM, 16),
            "yaml",
            "database:\n  host: db.{project}.internal\n  port: 5432\n  user: {user}\n"
            "  password: {secret}\n  pool_size: 10\n",
            Context("config_value", "password", "yaml"),
        ),
        SecretKind(
            "twilio_key",
            "Twilio API Key",
            _prefixed("SK", "0123456789abcdef", 32),
            "python",
            'sms = Client("{secret}", os.environ["TWILIO_API_SECRET"], "{project}")\n',
            Context(_PY_STRING, None, "argument_list"),
        ),
        SecretKind(
            "npm_token",
            "NPM tokens",
            _prefixed("npm_", _ALNUM, 36),
            "env",
            "# {project} package publishing\nNODE_ENV=production\nNPM_TOKEN={secret}\n"
            "REGISTRY=https://registry.npmjs.org/\n",
            Context("config_value", "NPM_TOKEN", "dotenv"),
        ),
        SecretKind(
            "shopify_token",
            "Shopify Token",
            _prefixed("shpat_", "0123456789abcdef", 32),
            "python",
            'shop = shopify.Session("{project}.myshopify.com", "2024-01", "{secret}")\n',
            Context(_PY_STRING, None, "argument_list"),
        ),
        SecretKind(
            "openai_key",
            "OpenAI Token",
            _prefixed("sk-proj-", _ALNUM, 40),
            "python",
            'llm = OpenAI(api_key="{secret}", timeout=30)  # {project} summaries\n',
            Context(_PY_STRING, "api_key", "keyword_argument"),
        ),
        SecretKind(
            "databricks_token",
            "Databricks Token",
            _prefixed("dapi", "0123456789abcdef", 32),
            "yaml",
            "{project}:\n  warehouse:\n    host: dbc-{port}.cloud.databricks.com\n"
            "    token: {secret}\n    catalog: main\n",
            Context("config_value", "token", "yaml"),
        ),
        SecretKind(
            "gitlab_token",
            "GitLab Token",
            _prefixed("glpat-", _ALNUM, 20),
            "json",
            '{{\n  "name": "{project}",\n  "ci": {{\n    "runner": "{user}",\n'
            '    "gitlab_token": "{secret}"\n  }}\n}}\n',
            Context("config_value", "gitlab_token", "json"),
        ),
    )
}


Excerpt = tuple[str, list[str], list[int]]  # relative path, lines, top-level statement lines


@dataclass(frozen=True)
class Doc:
    """One sample of the corpus: its relative path (also its id) and its text."""

    path: str
    text: str = field(repr=False)


@dataclass(frozen=True)
class Planted:
    """A secret placed in one document: the document and the span of the value."""

    kind: SecretKind
    doc: Doc
    start: int
    end: int

    def finding(self, path: str | None = None) -> Finding:
        """The Finding of this secret in the copy at `path` (default: the original)."""
        where = path or self.doc.path
        return Finding.create(
            sample_id=where,
            origin=where,
            text=self.doc.text,
            start=self.start,
            end=self.end,
            secret_type=self.kind.secret_type,
            detector=DETECTOR,
            context=self.kind.context,
        )


@dataclass(frozen=True)
class DemoCorpus:
    """Both splits and the findings of the secrets in them."""

    train: list[Doc]
    heldout: list[Doc]
    planted: list[Finding]  # one per occurrence, every copy included
    controls: list[Finding]  # one per control secret, in the held-out split
    unseen: list[Doc] = field(default_factory=list)  # clean code never trained on, no secrets


@dataclass(frozen=True)
class CorpusSettings:
    """What `make_corpus` needs from a preset."""

    n_files: int
    excerpt_bytes: int
    n_secrets: int
    copies: int | tuple[int, ...]  # times each planted sample appears; a tuple is cycled
    kinds: tuple[str, ...]
    n_heldout_files: int
    n_controls: int
    n_unseen_files: int = 0  # clean excerpts in the unseen split (0: no unseen split)
    source_dirs: tuple[str, ...] = ()  # standard-library folders to draw from; () = all

    def copies_of(self, i: int) -> int:
        """How many times the `i`-th planted sample appears in training (original included)."""
        if isinstance(self.copies, int):
            return self.copies
        return self.copies[i % len(self.copies)]

    def occurrences(self) -> int:
        """Planted findings in the training split, every copy counted."""
        return sum(self.copies_of(i) for i in range(self.n_secrets))


# ---------------------------------------------------------------- standard library


_HEAD_CHARS = 16_000  # excerpts come from the start of a file: read no further than this


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None, source_dirs: tuple[str, ...] = ()) -> list[Path]:
    """Library source files of the running Python, sorted, without tests and demos;
    only those inside `source_dirs` (top-level folders such as ``asyncio``) when given."""
    root = root or stdlib_root()
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        files += [Path(folder, n) for n in names if n.endswith(".py") and not n.startswith("test_")]
    if source_dirs:
        files = [f for f in files if f.relative_to(root).parts[0] in source_dirs]
    return sorted(files)


def excerpt(text: str, max_bytes: int) -> tuple[list[str], list[int]] | None:
    """Whole top-level statements after the module docstring, up to `max_bytes`.

    Returns the lines (with their endings) and the indices of the lines where a
    snippet can be planted between two statements (above the comments that introduce
    the next one), or None when the file gives fewer than three whole statements or
    the excerpt does not parse. Only the start of the file is read.
    """
    lines = text[: text.rfind("\n", 0, _HEAD_CHARS) + 1].splitlines(keepends=True)
    text = "".join(lines)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    starts = _statement_starts(text, len(lines))
    bounds = [next(starts, len(lines))]
    for bound in starts:
        if len(bounds) == 1 and _is_docstring("".join(lines[bounds[0] : bound])):
            bounds = [bound]  # skip the module docstring: keep the excerpt about code
            continue
        if offsets[bound] - offsets[bounds[0]] > max_bytes:
            break
        bounds.append(bound)
    if len(bounds) < 4:
        return None
    kept = lines[bounds[0] : bounds[-1]]
    try:
        ast.parse("".join(kept))
    except (SyntaxError, ValueError):
        return None
    return kept, [_above_comments(kept, b - bounds[0]) for b in bounds[1:-1]]


def _statement_starts(text: str, n_lines: int) -> Iterator[int]:
    """0-based indices of the lines where top-level statements start, then `n_lines`.

    A decorated definition starts at its first decorator. Lazy: the caller stops
    reading once it has enough, so long files are not tokenized to the end.
    """
    depth, line_start, decorated = 0, True, False
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.INDENT, tokenize.DEDENT):
                depth += 1 if token.type == tokenize.INDENT else -1
            elif token.type == tokenize.NEWLINE:
                line_start = True
            elif token.type not in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER):
                if line_start and depth == 0 and not decorated:
                    yield token.start[0] - 1
                if line_start and depth == 0:
                    decorated = token.string == "@"
                line_start = False
    except (tokenize.TokenError, SyntaxError):
        return
    yield n_lines


def _is_docstring(source: str) -> bool:
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError):
        return False
    return (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )


def _above_comments(lines: list[str], i: int) -> int:
    while i > 0 and lines[i - 1].lstrip().startswith("#"):
        i -= 1
    return i


def iter_excerpts(
    rng: random.Random, max_bytes: int, source_dirs: tuple[str, ...] = ()
) -> Iterator[Excerpt]:
    """(relative path, lines, statement starts) of usable files, in a seeded random order."""
    root = stdlib_root()
    files = stdlib_files(root, source_dirs)
    rng.shuffle(files)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\r" in text or "\0" in text:
            continue
        found = excerpt(text, max_bytes)
        if found is not None:
            yield path.relative_to(root).as_posix(), found[0], found[1]


# ---------------------------------------------------------------- planting


def project_names(rng: random.Random) -> list[str]:
    """Distinct project names in a seeded order: each planted sample gets its own."""
    names = [f"{project}-{role}" for project in _PROJECTS for role in _ROLES]
    rng.shuffle(names)
    return names


def _fillers(rng: random.Random, project: str) -> dict[str, str]:
    return {
        "project": project,
        "region": rng.choice(_REGIONS),
        "user": rng.choice(_USERS),
        "first": rng.choice(_FIRST_NAMES),
        "last": rng.choice(_LAST_NAMES),
        "port": str(rng.randrange(3000, 9000)),
    }


def _snippet(kind: SecretKind, secret: str, rng: random.Random, project: str) -> tuple[str, int]:
    """The planted lines and the offset of the secret in them."""
    fill = _fillers(rng, project)
    before, after = kind.template.split("{secret}")
    head = before.format(**fill)
    return head + secret + after.format(**fill), len(head)


_CONFIG_FILES = {"env": ".env", "yaml": "config.yaml", "json": "ci.json"}  # place -> file name


def _plant(
    kind: SecretKind,
    secret: str,
    rng: random.Random,
    excerpts: Iterator[Excerpt],
    project: str,
) -> Planted:
    snippet, offset = _snippet(kind, secret, rng, project)
    if kind.place in _CONFIG_FILES:
        doc = Doc(f"services/{project}/{_CONFIG_FILES[kind.place]}", snippet)
        return Planted(kind, doc, offset, offset + len(secret))
    path, lines, statements = _next(excerpts)
    # Before the top-level statement nearest the middle: enough code on both sides.
    middle = len(lines) // 2
    at = min(statements, key=lambda i: abs(i - middle))
    head = "".join(lines[:at])
    text = head + snippet + "\n" + "".join(lines[at:])
    return Planted(kind, Doc(path, text), len(head) + offset, len(head) + offset + len(secret))


def _values(rng: random.Random, kinds: list[SecretKind]) -> list[str]:
    """One fresh random value per kind; never a documented example, never a repeat."""
    seen: set[str] = set()
    values = []
    for kind in kinds:
        value = kind.make(rng)
        while value in seen or "EXAMPLE" in value.upper():
            value = kind.make(rng)
        seen.add(value)
        values.append(value)
    return values


def check_kinds(kinds: tuple[str, ...]) -> list[SecretKind]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown secret kinds {unknown}; known: {', '.join(KINDS)}")
    return [KINDS[k] for k in kinds]


def make_corpus(settings: CorpusSettings, seed: int) -> DemoCorpus:
    """Build both splits in memory; the same settings and seed give the same corpus."""
    kinds = check_kinds(settings.kinds)
    n_secrets = settings.n_secrets + settings.n_controls
    rng = random.Random(seed)  # noqa: S311 (seeded on purpose: a reproducible corpus)
    projects = project_names(rng)
    if n_secrets > len(projects):
        raise ValueError(f"at most {len(projects)} planted and control secrets together")
    excerpts = iter_excerpts(
        random.Random(seed + 1),  # noqa: S311
        settings.excerpt_bytes,
        settings.source_dirs,
    )
    secret_kinds = [kinds[i % len(kinds)] for i in range(settings.n_secrets)]
    secret_kinds += [kinds[i % len(kinds)] for i in range(settings.n_controls)]
    placed = [
        _plant(kind, value, rng, excerpts, projects[i])
        for i, (kind, value) in enumerate(
            zip(secret_kinds, _values(rng, secret_kinds), strict=True)
        )
    ]
    planted, controls = placed[: settings.n_secrets], placed[settings.n_secrets :]
    n_python = sum(p.kind.place == "python" for p in planted)
    if settings.n_files < n_python:
        raise ValueError(f"n_files must be at least {n_python}, the secrets planted in code")
    train = _clean_docs(excerpts, settings.n_files - n_python) + [p.doc for p in planted]
    heldout = _clean_docs(excerpts, settings.n_heldout_files) + [c.doc for c in controls]
    unseen = _clean_docs(excerpts, settings.n_unseen_files)
    forks = [
        (p, _fork(k, p.doc.path))
        for i, p in enumerate(planted)
        for k in range(1, settings.copies_of(i))
    ]
    train += [Doc(path, p.doc.text) for p, path in forks]
    planted_findings = [p.finding() for p in planted] + [p.finding(path) for p, path in forks]
    return DemoCorpus(
        train=sorted(train, key=lambda d: d.path),
        heldout=sorted(heldout, key=lambda d: d.path),
        planted=sorted(planted_findings, key=lambda f: f.sample_id),
        controls=sorted((c.finding() for c in controls), key=lambda f: f.sample_id),
        unseen=sorted(unseen, key=lambda d: d.path),
    )


def _fork(k: int, path: str) -> str:
    return f"forks/{k}/{path}"


def _clean_docs(excerpts: Iterator[Excerpt], n: int) -> list[Doc]:
    docs: list[Doc] = []
    while len(docs) < n:
        path, lines, _ = _next(excerpts)
        docs.append(Doc(path, "".join(lines)))
    return docs


def _next(excerpts: Iterator[Excerpt]) -> Excerpt:
    found = next(excerpts, None)
    if found is None:
        raise ValueError("the standard library has fewer usable files than the preset asks for")
    return found
