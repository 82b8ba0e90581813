"""Benchmark `codeeraser scan` against `detect-secrets scan --all-files`, side by side.

Generates a corpus from a seeded RNG: code and config files in twelve languages and
formats with fake secrets of 24 kinds planted at known spans, decoys that look like
secrets but are documented examples, placeholders, environment look-ups, example
e-mails, private IPs, versions, UUIDs, checksums and sequences, plus unchanged
standard-library files as background. Then it runs both scanners on it and reports
per-kind recall, decoys flagged, and wall-clock throughput (process start included).

    python bench/scan.py                 # the numbers in BENCHMARKS.md
    python bench/scan.py --keep corpus/  # also keep the generated corpus
    python bench/scan.py --datatrove --before ../before   # the datatrove engine, 1 TB estimate

Recall for codeeraser counts a planted secret as found only when a finding has its
exact span. For detect-secrets, which reports lines, it is given both ways: any
finding on the secret's line (lenient), and a finding whose hashed value is the
secret's (exact). Nothing secret is printed: only counts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import string
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
HEX = "0123456789abcdef"
DIGITS = string.digits


@dataclass
class Item:
    """One planted secret or decoy: where it is, never what it is (only its hashes)."""

    kind: str
    decoy: bool
    path: str
    start: int
    end: int
    line: int
    sha1: str  # what detect-secrets reports as hashed_secret
    sha256: str  # what codeeraser reports as secret_sha256


class Fakes:
    """Fake secrets and decoys of many kinds, from one seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def r(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def jwt(self) -> str:
        def part(obj: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

        claims = {"sub": self.r(DIGITS, 8), "role": "service", "iat": 1700000000}
        return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{self.r(URLSAFE, 43)}"

    def pem(self) -> str:
        body = "\n".join(self.r(ALNUM + "+/", 64) for _ in range(8))
        return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"

    def password(self) -> str:
        word = self.rng.choice(["Winter", "Falcon", "Orchid", "Quartz", "Maple", "Harbor"])
        return f"{word}{self.r(DIGITS, 4)}{self.rng.choice('!#%&*')}{self.r(ALNUM, 4)}"

    def email(self) -> str:
        first = self.rng.choice(["maria", "dmitri", "aiko", "lars", "priya", "tomas", "wei"])
        domain = self.rng.choice(["fastmail.fm", "northwind-labs.io", "contoso-mail.net"])
        return f"{first}.{self.r(string.ascii_lowercase, 6)}@{domain}"

    def ipv4(self) -> str:
        return f"{self.rng.choice([34, 52, 63, 104, 151, 185])}.{self.rng.randint(0, 255)}." + (
            f"{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
        )


SECRETS: dict[str, tuple[str, Callable[[Fakes], str]]] = {
    # kind -> (the name it is assigned to, generator)
    "aws_access_key_id": (
        "aws_access_key_id",
        lambda f: "AKIA" + f.r(string.ascii_uppercase + DIGITS, 16),
    ),
    "aws_secret_access_key": ("aws_secret_access_key", lambda f: f.r(ALNUM + "/+", 40)),
    "github_token": ("github_token", lambda f: "ghp_" + f.r(ALNUM, 36)),
    "github_fine_grained": ("gh_pat", lambda f: f"github_pat_{f.r(ALNUM, 22)}_{f.r(ALNUM, 59)}"),
    "gitlab_token": ("gitlab_token", lambda f: "glpat-" + f.r(URLSAFE, 20)),
    "slack_token": (
        "slack_bot_token",
        lambda f: f"xoxb-{f.r(DIGITS, 12)}-{f.r(DIGITS, 13)}-{f.r(ALNUM, 24)}",
    ),
    "stripe_key": ("stripe_secret", lambda f: "sk_live_" + f.r(ALNUM, 99)),
    "google_api_key": ("maps_key", lambda f: "AIza" + f.r(URLSAFE, 35)),
    "huggingface_token": ("hf_token", lambda f: "hf_" + f.r(string.ascii_letters, 34)),
    "openai_key": ("openai_api_key", lambda f: "sk-proj-" + f.r(URLSAFE, 120)),
    "anthropic_key": ("anthropic_api_key", lambda f: f"sk-ant-api03-{f.r(URLSAFE, 93)}AA"),
    "npm_token": ("npm_token", lambda f: "npm_" + f.r(ALNUM, 36)),
    "sendgrid_key": ("sendgrid_api_key", lambda f: f"SG.{f.r(URLSAFE, 22)}.{f.r(URLSAFE, 43)}"),
    "twilio_key": ("twilio_api_key", lambda f: "SK" + f.r(HEX, 32)),
    "telegram_token": ("telegram_bot", lambda f: f"{f.r(DIGITS, 10)}:AA{f.r(URLSAFE, 33)}"),
    "shopify_token": ("shopify_access", lambda f: "shpat_" + f.r(HEX, 32)),
    "digitalocean_token": ("do_token", lambda f: "dop_v1_" + f.r(HEX, 64)),
    "pypi_token": ("pypi_upload", lambda f: "pypi-AgEIcHlwaS5vcmc" + f.r(URLSAFE, 150)),
    "jwt": ("session_jwt", Fakes.jwt),
    "password": ("db_password", Fakes.password),
    "connection_string": ("database_url", lambda f: f.r(ALNUM, 18)),
    "email": ("maintainer", Fakes.email),
    "ip_address": ("upstream_host", Fakes.ipv4),
    "private_key": ("private_key", Fakes.pem),
}


def _private_ip(f: Fakes) -> str:
    return f"10.{f.rng.randint(0, 255)}.{f.rng.randint(0, 255)}.{f.rng.randint(1, 254)}"


def _version(f: Fakes) -> str:
    return ".".join(str(f.rng.randint(0, 20)) for _ in range(4))


PLACEHOLDERS = ["your-api-key-here", "<YOUR_TOKEN>", "changeme", "x" * 24, "REPLACE_ME"]
TEMPLATES = ["${DB_PASSWORD}", "{{ vault_db_password }}"]
SEQUENCES = ["abcdefghijklmnopqrstuvwxyz", "0123456789abcdef", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"]
DECOYS: dict[str, tuple[str, Callable[[Fakes], str]]] = {
    "documented AWS example": ("aws_access_key_id", lambda f: "AKIAIOSFODNN7EXAMPLE"),
    "documented AWS secret": (
        "aws_secret_access_key",
        lambda f: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    "placeholder": ("api_key", lambda f: f.rng.choice(PLACEHOLDERS)),
    "template": ("db_password", lambda f: f.rng.choice(TEMPLATES)),
    "example e-mail": ("maintainer", lambda f: f"{f.r(string.ascii_lowercase, 6)}@example.com"),
    "private IP": ("upstream_host", _private_ip),
    "version number": ("__version__", _version),
    "UUID": ("request_id", lambda f: "-".join(f.r(HEX, n) for n in (8, 4, 4, 4, 12))),
    "checksum": ("sha256", lambda f: hashlib.sha256(f.r(ALNUM, 16).encode()).hexdigest()),
    "sequential": ("secret_key", lambda f: f.rng.choice(SEQUENCES)),
}
ENV_DECOY = "environment lookup"  # written as code, not as an assigned value

# language -> (extension, assignment template, comment prefix, filler lines)
LANGUAGES: dict[str, tuple[str, str, str, list[str]]] = {
    "python": (
        ".py",
        '{name} = "{value}"',
        "# ",
        [
            "import os",
            "import logging",
            "",
            "log = logging.getLogger(__name__)",
            "",
            "def retry(times=3):",
            "    return [i for i in range(times)]",
            "",
            "class Client:",
            "    timeout = 30",
            "    def close(self):",
            "        return None",
            "",
        ],
    ),
    "javascript": (
        ".js",
        'const {name} = "{value}";',
        "// ",
        [
            "'use strict';",
            "const path = require('path');",
            "",
            "function main(args) {",
            "  return args.map((a) => a.trim());",
            "}",
            "module.exports = { main };",
            "",
        ],
    ),
    "typescript": (
        ".ts",
        'export const {name}: string = "{value}";',
        "// ",
        [
            "import { readFile } from 'fs/promises';",
            "",
            "export interface Options {",
            "  retries: number;",
            "}",
            "export async function load(p: string) {",
            "  return readFile(p, 'utf8');",
            "}",
            "",
        ],
    ),
    "java": (
        ".java",
        '    static final String {name} = "{value}";',
        "// ",
        [
            "package com.example.service;",
            "",
            "import java.util.List;",
            "",
            "public class Config {",
            "    private int retries = 3;",
            "    public int getRetries() { return retries; }",
            "}",
            "",
        ],
    ),
    "go": (
        ".go",
        'var {name} = "{value}"',
        "// ",
        [
            "package config",
            "",
            'import "fmt"',
            "",
            "func Describe() string {",
            '\treturn fmt.Sprintf("v%d", 2)',
            "}",
            "",
        ],
    ),
    "ruby": (
        ".rb",
        '{name} = "{value}"',
        "# ",
        [
            "require 'json'",
            "",
            "module Settings",
            "  def self.load(path)",
            "    JSON.parse(File.read(path))",
            "  end",
            "end",
            "",
        ],
    ),
    "php": (
        ".php",
        "${name} = '{value}';",
        "// ",
        [
            "<?php",
            "",
            "namespace App\\Config;",
            "",
            "function retries(): int {",
            "    return 3;",
            "}",
            "",
        ],
    ),
    "yaml": (
        ".yaml",
        "{name}: {value}",
        "# ",
        [
            "service:",
            "  replicas: 2",
            "  image: registry.local/app:latest",
            "logging:",
            "  level: info",
            "",
        ],
    ),
    "json": (".json", '  "{name}": "{value}",', "", ['  "name": "service",', '  "retries": 3,']),
    "dotenv": (
        ".env",
        "{NAME}={value}",
        "# ",
        ["APP_ENV=production", "LOG_LEVEL=info", "PORT=8080"],
    ),
    "toml": (
        ".toml",
        '{name} = "{value}"',
        "# ",
        ["[tool.app]", 'name = "service"', "retries = 3", ""],
    ),
    "shell": (
        ".sh",
        'export {NAME}="{value}"',
        "# ",
        ["#!/usr/bin/env bash", "set -euo pipefail", "", 'cd "$(dirname "$0")"', ""],
    ),
}


def _render(language: str, kind: str, name: str, value: str, fakes: Fakes) -> tuple[str, str]:
    """(line text, the exact substring that is the secret) for one planted item."""
    _, assign, comment, _ = LANGUAGES[language]
    if kind in ("email", "example e-mail") and comment:
        return f"{comment}Maintainer: {value}", value
    if kind == "private_key":
        return _render_key(language, name, value, assign)
    shown = value
    if kind == "connection_string":
        shown = f"postgresql://app_user:{value}@db-{fakes.r(HEX, 6)}.internal.net:5432/app"
    elif kind == "jwt":
        shown = f"Bearer {value}"
    return _assign(assign, name, shown), value


def _render_key(language: str, name: str, pem: str, assign: str) -> tuple[str, str]:
    """A PEM block: as a multi-line string where the language has one, else with \\n escapes."""
    if language in ("python", "ruby"):
        return f'{name} = """{pem}"""', pem
    if language in ("javascript", "typescript"):
        return f"const {name} = `{pem}`;", pem
    escaped = pem.replace("\n", "\\n")
    return _assign(assign, name, escaped), escaped


def _assign(template: str, name: str, value: str) -> str:
    head, *rest = name.split("_")
    camel = head + "".join(p.title() for p in rest)
    chosen = camel if "const" in template else name
    return template.format(name=chosen, NAME=name.upper(), value=value)


def _env_decoy(language: str) -> tuple[str, str]:
    lookups = {
        "python": ('api_token = os.environ["API_TOKEN"]', "API_TOKEN"),
        "javascript": ("const apiToken = process.env.API_TOKEN;", "API_TOKEN"),
        "ruby": ('api_token = ENV.fetch("API_TOKEN")', "API_TOKEN"),
        "php": ("$api_token = getenv('API_TOKEN');", "API_TOKEN"),
        "shell": ('export API_TOKEN="${API_TOKEN}"', "${API_TOKEN}"),
        "yaml": ("api_token: ${API_TOKEN}", "${API_TOKEN}"),
    }
    return lookups.get(language, lookups["yaml"])


def generate(root: Path, seed: int, files: int, stdlib_files: int) -> list[Item]:
    """Write the corpus under `root`; return the planted secrets and decoys."""
    rng = random.Random(seed)
    fakes = Fakes(rng)
    plan: list[tuple[str, str, bool]] = []  # (language, kind, decoy)
    languages = sorted(LANGUAGES)
    for i, kind in enumerate(sorted(SECRETS) * 8):
        plan.append((languages[(i * 5) % len(languages)], kind, False))
    decoy_kinds = [*sorted(DECOYS), ENV_DECOY]
    for i, kind in enumerate(decoy_kinds * 6):
        plan.append((languages[(i * 7) % len(languages)], kind, True))
    rng.shuffle(plan)
    by_language: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for language, kind, decoy in plan:
        by_language[language].append((kind, decoy))
    per_language = max(1, (files - stdlib_files) // len(languages))
    items: list[Item] = []
    for language in languages:
        entries = by_language[language]
        for n in range(per_language):
            chunk = entries[n::per_language]
            items += _write_file(root, language, n, chunk, fakes)
    _copy_stdlib(root / "stdlib", rng, stdlib_files)
    return items


def _write_file(
    root: Path, language: str, n: int, entries: list[tuple[str, bool]], fakes: Fakes
) -> list[Item]:
    ext, _, _, filler = LANGUAGES[language]
    rel = f"{language}/svc_{n:03d}/.env" if ext == ".env" else f"{language}/module_{n:03d}{ext}"
    lines: list[str | tuple[str, str, str, bool]] = [*filler] * fakes.rng.randint(2, 4)
    for kind, decoy in entries:
        if kind == ENV_DECOY:
            text, secret = _env_decoy(language)
        else:
            name, make = (DECOYS if decoy else SECRETS)[kind]
            text, secret = _render(language, kind, name, make(fakes), fakes)
        lines.insert(fakes.rng.randint(1, len(lines)), (text, secret, kind, decoy))
    if language == "json":
        lines = ["{", *lines, '  "end": true', "}"]
    body, items = "", []
    for entry in lines:
        if isinstance(entry, tuple):
            text, secret, kind, decoy = entry
            start = len(body) + text.index(secret)
            items.append(_item(body + text, rel, start, secret, (kind, decoy)))
        else:
            text = entry
        body += text + "\n"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return items


def _item(body: str, rel: str, start: int, secret: str, what: tuple[str, bool]) -> Item:
    kind, decoy = what
    return Item(
        kind=kind,
        decoy=decoy,
        path=rel,
        start=start,
        end=start + len(secret),
        line=body.count("\n", 0, start) + 1,
        sha1=hashlib.sha1(secret.encode()).hexdigest(),
        sha256=hashlib.sha256(secret.encode()).hexdigest(),
    )


def _stdlib_modules() -> list[tuple[Path, Path]]:
    """(path, path relative to the standard library) of its modules, tests left out."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] not in ("site-packages", "test", "idlelib") and "tests" not in rel.parts:
            modules.append((path, rel))
    return modules


def _copy_stdlib(target: Path, rng: random.Random, count: int) -> None:
    small = [(p, rel) for p, rel in _stdlib_modules() if p.stat().st_size < 60_000]
    for path, rel in rng.sample(small, min(count, len(small))):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / rel)


def run_codeeraser(
    corpus: Path, out: Path, jobs: int | None, repo: Path = REPO, extra: tuple[str, ...] = ()
) -> float:
    """Wall-clock seconds of one `codeeraser scan` (of the code in `repo`), process start
    included."""
    cmd = [sys.executable, "-m", "gate", "-q", "scan", str(corpus), "--out", str(out), *extra]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_detect_secrets(
    corpus: Path, cores: int | None = None
) -> tuple[float, dict[str, list[dict[str, Any]]]]:
    """Wall-clock seconds of `detect-secrets scan --all-files`, and its results.

    Without `cores` it uses a process per core (its default, like ours)."""
    venv_bin = str(Path(sys.executable).parent)
    exe = shutil.which("detect-secrets", path=venv_bin) or "detect-secrets"
    cmd = [exe, *(["--cores", str(cores)] if cores else []), "scan", "--all-files", "."]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=corpus, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads(done.stdout)["results"]


def score(
    items: list[Item], ours: list[dict[str, Any]], theirs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Per kind: planted n, found by us (exact span), by detect-secrets (line / exact)."""
    spans = {(f["sample_id"], f["start"], f["end"]) for f in ours}
    ours_by_path: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for f in ours:
        ours_by_path[f["sample_id"]].append((f["start"], f["end"]))
    ds_lines = {(path, r["line_number"]) for path, rs in theirs.items() for r in rs}
    ds_hashes = {(path, r["hashed_secret"]) for path, rs in theirs.items() for r in rs}
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        row = rows[("decoy: " if item.decoy else "") + item.kind]
        row["n"] += 1
        overlap = any(s < item.end and item.start < e for s, e in ours_by_path[item.path])
        exact = (item.path, item.start, item.end) in spans
        row["ours"] += overlap if item.decoy else exact
        row["ds_line"] += (item.path, item.line) in ds_lines
        row["ds_exact"] += (item.path, item.sha1) in ds_hashes
    return {
        "rows": {kind: dict(row) for kind, row in sorted(rows.items())},
        "background_ours": sum(1 for f in ours if f["sample_id"].startswith("stdlib/")),
        "background_ds": sum(len(rs) for p, rs in theirs.items() if p.startswith("stdlib/")),
    }


def _totals(rows: dict[str, dict[str, int]], decoy: bool) -> Counter[str]:
    total: Counter[str] = Counter()
    for kind, row in rows.items():
        if kind.startswith("decoy: ") == decoy:
            total.update(row)
    return total


def report(result: dict[str, Any]) -> str:
    """Markdown tables of recall, decoys and throughput (counts only, no values)."""
    rows: dict[str, dict[str, int]] = result["rows"]
    out = [
        "| planted kind | n | codeeraser (exact span) | detect-secrets (line) "
        "| detect-secrets (exact value) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, row in rows.items():
        if not kind.startswith("decoy: "):
            cells = [row["n"], row.get("ours", 0), row.get("ds_line", 0), row.get("ds_exact", 0)]
            out.append(f"| {kind} | " + " | ".join(map(str, cells)) + " |")
    s = _totals(rows, decoy=False)
    recall = [s["ours"] / s["n"], s["ds_line"] / s["n"], s["ds_exact"] / s["n"]]
    out.append(
        f"| **recall** | {s['n']} | **{recall[0]:.3f}** | {recall[1]:.3f} | {recall[2]:.3f} |"
    )
    out += [
        "",
        "| decoy kind | n | flagged by codeeraser | flagged by detect-secrets (line) |",
        "|---|---:|---:|---:|",
    ]
    for kind, row in rows.items():
        if kind.startswith("decoy: "):
            out.append(
                f"| {kind[7:]} | {row['n']} | {row.get('ours', 0)} | {row.get('ds_line', 0)} |"
            )
    d = _totals(rows, decoy=True)
    per50 = [50 * d["ours"] / d["n"], 50 * d["ds_line"] / d["n"]]
    out.append(f"| **per 50 decoys** | {d['n']} | **{per50[0]:.1f}** | {per50[1]:.1f} |")
    return "\n".join([*out, "", _throughput(result)])


def _throughput(result: dict[str, Any]) -> str:
    t = result["timing"]
    out = ["| scanner | wall s | files/s | MB/s | vs detect-secrets |", "|---|---:|---:|---:|---:|"]
    runs = [
        ("detect-secrets scan --all-files", "ds"),
        ("codeeraser scan --jobs 1", "ours_1"),
        (f"codeeraser scan (default: all {t['cores']} cores)", "ours"),
    ]
    for label, key in runs:
        sec = t[key]
        speed = f"{t['files'] / sec:.0f} | {t['mb'] / sec:.2f} | {t['ds'] / sec:.1f}×"
        out.append(f"| {label} | {sec:.2f} | {speed} |")
    out.append(
        f"\nLoad average (1 min) on the machine: {t['load'][0]:.1f} before, "
        f"{t['load'][1]:.1f} after the comparison."
    )
    out.append(
        f"\nFindings on the standard-library background: codeeraser "
        f"{result['background_ours']}, detect-secrets {result['background_ds']}."
    )
    if "scaling" in result:
        sc = result["scaling"]
        out.append(
            f"\nScaling, codeeraser alone on {sc['files']} standard-library modules "
            f"({sc['mb']:.1f} MB): --jobs 1 {sc['jobs_1']:.1f} s ({sc['mb'] / sc['jobs_1']:.1f} "
            f"MB/s); all {t['cores']} cores {sc['jobs_all']:.1f} s "
            f"({sc['mb'] / sc['jobs_all']:.1f} MB/s): {sc['jobs_1'] / sc['jobs_all']:.2f}×."
        )
        out.append(
            f"\nPeak memory of `--jobs 1`: {sc['mb_x1']:.0f} MB on those modules, "
            f"{sc['mb_x4']:.0f} MB on four copies of them ({4 * sc['mb']:.0f} MB)."
        )
    return "\n".join(out)


def scaling(tmp: Path, repeat: int) -> dict[str, Any]:
    """codeeraser alone on every standard-library module: one process against all cores."""
    corpus = tmp / "stdlib-all"
    for path, rel in _stdlib_modules():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, corpus / rel)
    files = list(corpus.rglob("*.py"))
    out = tmp / "stdlib-findings.jsonl"
    return {
        "files": len(files),
        "mb": sum(p.stat().st_size for p in files) / 1e6,
        "jobs_1": statistics.median(run_codeeraser(corpus, out, 1) for _ in range(repeat)),
        "jobs_all": statistics.median(run_codeeraser(corpus, out, None) for _ in range(repeat)),
        **memory(tmp, corpus),
    }


def peak_rss_mb(corpus: Path, out: Path) -> float:
    """Peak resident memory (MB) of one `codeeraser scan --jobs 1`, measured by a wrapper
    process whose only child is the scan."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "gate",
        "-q",
        "scan",
        str(corpus),
        "--out",
        str(out),
        "--jobs",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, *cmd], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout.strip()) / 1024  # ru_maxrss is in KiB on Linux


def memory(tmp: Path, base: Path) -> dict[str, float]:
    """Peak memory on the standard library, and on four copies of it: streaming means
    the second is not four times the first."""
    big = tmp / "stdlib-x4"
    for k in range(4):
        shutil.copytree(base, big / f"copy{k}")
    out = tmp / "mem.jsonl"
    return {"mb_x1": peak_rss_mb(base, out), "mb_x4": peak_rss_mb(big, out)}


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


# --------------------------------------------------------------------------------------
# The case suite: every detector's cases in several syntaxes, and hard negatives.
# --------------------------------------------------------------------------------------

# How a bare token is written in other syntaxes: (template, language).
TOKEN_SYNTAXES = [
    ('{{"value": "{t}"}}', "json"),
    ("value: {t}", "yaml"),
    ("<value>{t}</value>", "xml"),
    ("VALUE={t}", "dotenv"),
    ("Use {t} to log in.", "markdown"),
    ('const value = "{t}";', "javascript"),
    ("value := `{t}`", "go"),
]
HARD_NEGATIVES = [
    ("see x{google} in the log", None),
    ("run task_test_{stripe_body} now", None),
    ("the ASIAPACIFICREGIONNAMES list", None),
    ('key = "AIza' + "a" * 35 + '"', "python"),
    ('SLACK = "xoxp-1234-5678-abcd"', "python"),
    ('api_key = "RANDOMSTRINGHERE"', "python"),
    ('password = "12345678"', "python"),
    ('password = "********"', "python"),
    ("password: ENC[AES256_GCM,data:{b64},type:str]", "yaml"),
    ('password = "DB_PASSWORD"', "python"),
    ('public_key = "ssh-ed25519 {b64}"', "python"),
    ('csrf_token = "{b64}"', "python"),
    ('signature = "{b64}"', "python"),
    ('revision = "{hex}"', "python"),
    ("-----BEGIN RSA PRIVATE KEY-----\\nMIIE...\\n-----END RSA PRIVATE KEY-----", None),
    ("password = get_password()", "python"),
    ('tokenizer_name = "bert-base-uncased"', "python"),
    ('password_prompt = "Enter password: "', "python"),
    ("password: enter your password here", "yaml"),
    ("host = 192.168.1.20", "ini"),
    ('__version__ = "4.2.1.7"', "python"),
    ("# contact: jane.doe@example.com", "python"),
    ('api_token = os.environ["API_TOKEN"]', "python"),
    ("api_token: ${{API_TOKEN}}", "yaml"),
    ('request_id = "{uuid}"', "python"),
    ('sha256 = "{sha}"', "python"),
    ('secret_key = "abcdefghijklmnopqrstuvwxyz"', "python"),
]


def case_suite(seed: int = 0) -> dict[str, Any]:
    """Recall per secret type (exact span), and the share of negatives flagged."""
    from audit.detectors import build_detectors
    from audit.scan import scan_text
    from tests.audit.detector_cases import NEGATIVES, POSITIVES, render

    rng = random.Random(seed)
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for detector in build_detectors():
        for template, language in POSITIVES[detector.name]:
            for text, spans, lang in _variants(detector.mode, template, language, rng, render):
                result = scan_text(text, "case", lang)
                kinds = {(f.start, f.end): f.secret_type for f in result.findings}
                for span in spans:
                    row = found[_family(detector.secret_type)]
                    row["n"] += 1
                    row["found"] += span in kinds
                    row["covered"] += any(s <= span[0] and span[1] <= e for s, e in kinds)
    negatives = _negative_texts(NEGATIVES, POSITIVES, rng, render)
    flagged = sum(bool(scan_text(t, "case", lang).findings) for t, lang in negatives)
    return {
        "families": {k: dict(v) for k, v in sorted(found.items())},
        "negatives": len(negatives),
        "negatives_flagged": flagged,
    }


def _family(secret_type: str) -> str:
    return secret_type


def _variants(
    mode: str, template: str, language: str | None, rng: random.Random, render: Any
) -> Any:
    """The case as written, and for a token format the token in other syntaxes."""
    text, spans = render(template, rng)
    yield text, spans, language
    if mode != "anchored" or len(spans) != 1:
        return
    token = text[spans[0][0] : spans[0][1]]
    for syntax, lang in TOKEN_SYNTAXES:
        line = syntax.format(t=token)
        start = line.index(token)
        yield line, [(start, start + len(token))], lang


def _negative_texts(
    negatives: Any, positives: Any, rng: random.Random, render: Any
) -> list[tuple[str, str | None]]:
    from audit.detectors import build_detectors
    from tests.audit.fakes import FAKES

    fakes = {
        **FAKES,
        "stripe_body": FAKES["stripe"][8:],
        "uuid": "-".join(Fakes(rng).r(HEX, k) for k in (8, 4, 4, 4, 12)),
        "sha": hashlib.sha256(b"x").hexdigest(),
    }
    out = [(t.format(**fakes), lang) for t, lang in HARD_NEGATIVES]
    for cases in negatives.values():
        out += [(render(t, rng)[0], lang) for t, lang in cases]
    for detector in build_detectors():
        if detector.mode != "anchored":
            continue
        text, ((start, end),) = render(positives[detector.name][0][0], rng)
        token = text[start:end]
        out.append((f"see {token[: len(token) // 2 + 2]}… in the notes", None))
        out.append((f"see x{token} in the notes", None))
    return out


def suite_report(result: dict[str, Any]) -> str:
    rows = [
        "| secret type | cases | found at the exact span | inside a finding | recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for family, row in result["families"].items():
        recall = row.get("found", 0) / row["n"]
        rows.append(
            f"| {family} | {row['n']} | {row.get('found', 0)} | {row.get('covered', 0)} "
            f"| {recall:.2f} |"
        )
    total: Counter[str] = Counter()
    for row in result["families"].values():
        total.update(row)
    worst = min(r.get("found", 0) / r["n"] for r in result["families"].values())
    rows.append(
        f"| **all {len(result['families'])} types** | {total['n']} | {total['found']} "
        f"| {total['covered']} | lowest {worst:.2f} |"
    )
    share = result["negatives_flagged"] / result["negatives"]
    rows.append(
        f"\nNegatives flagged: {result['negatives_flagged']} of {result['negatives']} "
        f"({share:.1%})."
    )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------
# Speed on the standard library, side by side with detect-secrets.
# --------------------------------------------------------------------------------------


def stdlib_comparison(tmp: Path, small_only: bool) -> dict[str, Any]:
    """Both CLIs on the same standard-library modules (under 60 KB each if small_only)."""
    corpus = tmp / "stdlib-compare"
    for path, rel in _stdlib_modules():
        if not small_only or path.stat().st_size < 60_000:
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, corpus / rel)
    files = [p for p in corpus.rglob("*") if p.is_file()]
    out = tmp / "stdlib-compare.jsonl"
    ours = statistics.median(run_codeeraser(corpus, out, 1) for _ in range(3))
    theirs, _ = run_detect_secrets(corpus, cores=1)
    ours_all = statistics.median(run_codeeraser(corpus, out, 0) for _ in range(3))
    theirs_all, _ = run_detect_secrets(corpus)
    return {"files": len(files), "mb": sum(p.stat().st_size for p in files) / 1e6,
            "ours": ours, "ds": theirs, "ours_all": ours_all, "ds_all": theirs_all,
            "cores": len(os.sched_getaffinity(0)), "startup": _startup_seconds()}  # fmt: skip


def _startup_seconds() -> float:
    """`codeeraser scan --list-detectors`: start-up and imports, no scanning."""
    cmd = [sys.executable, "-m", "gate", "scan", "--list-detectors"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def profile_stages(corpus: Path) -> dict[str, float]:
    """Seconds per stage of an in-process scan of `corpus` (one process, one core)."""
    import cProfile
    import pstats

    from audit.corpus import CorpusSpec, iter_samples
    from audit.scan import scan_samples

    samples = list(iter_samples(CorpusSpec(corpus)))
    scan_samples(samples[:3])
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    scan_samples(samples)
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cum(name: str) -> float:
        return float(sum(v[3] for k, v in stats.items() if k[2] == name))

    return {"total (profiled)": wall, "keyword automaton": cum("_hits"),
            "tree-sitter parsing": cum("_parse"), "filters": cum("false_positive"),
            "line detectors": cum("_line_spans"),
            "token runs (entropy, encoded)": cum("_run_spans"),
            "IP candidates": cum("_ip_spans")}  # fmt: skip


def compare_report(c: dict[str, Any], stages: dict[str, float]) -> str:
    ratio, ratio_all, n = c["ds"] / c["ours"], c["ds_all"] / c["ours_all"], c["cores"]
    lines = [
        f"Standard library, {c['files']} modules ({c['mb']:.1f} MB):",
        "",
        "| scanner | wall s | MB/s per core | vs detect-secrets |",
        "|---|---:|---:|---:|",
        f"| detect-secrets --cores 1 scan --all-files | {c['ds']:.2f} | {c['mb'] / c['ds']:.2f} "
        "| 1.0× |",
        f"| codeeraser scan --jobs 1 | {c['ours']:.2f} | {c['mb'] / c['ours']:.2f} "
        f"| {ratio:.1f}× |",
        f"| detect-secrets scan --all-files (a process per core, {n}) | {c['ds_all']:.2f} "
        f"| {c['mb'] / c['ds_all'] / n:.2f} | 1.0× |",
        f"| codeeraser scan (default: every core, {n}) | {c['ours_all']:.2f} "
        f"| {c['mb'] / c['ours_all'] / n:.2f} | {ratio_all:.1f}× |",
        "",
        f"Start-up (`codeeraser scan --list-detectors`, median of 5): {c['startup']:.2f} s; "
        f"scanning alone: {c['mb'] / max(c['ours'] - c['startup'], 1e-9):.1f} MB/s per core.",
        "",
        "| stage (in-process profile) | s |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {sec:.3f} |" for name, sec in stages.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# At corpus scale: the datatrove engine against the local engine, and a 1 TB estimate.
# --------------------------------------------------------------------------------------


def datatrove_bench(tmp: Path, repeat: int, before: Path | None, copies: int = 4) -> dict[str, Any]:
    """`copies` copies of every standard-library module scanned by the local engine
    (--jobs 1 and 2; also by the code in `before`, the tree before the datatrove engine)
    and by the datatrove engine (1 and 2 tasks), runs interleaved; every output must be
    the same bytes. The datatrove engine's fixed cost (start-up, executor, merge) is
    measured on a one-file corpus."""
    corpus = tmp / "stdlib-scale"
    for copy in range(copies):
        for path, rel in _stdlib_modules():
            (corpus / f"copy{copy}" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, corpus / f"copy{copy}" / rel)
    tiny = tmp / "one-file"
    tiny.mkdir()
    (tiny / "a.py").write_text("x = 1\n")
    runs: dict[str, Callable[[Path], float]] = {}
    for n in (1, 2):
        runs[f"cli --jobs {n}"] = partial(_cli_run, corpus, jobs=n, repo=REPO)
        if before is not None:
            runs[f"before: cli --jobs {n}"] = partial(_cli_run, corpus, jobs=n, repo=before)
    task_cpu: dict[str, list[float]] = {}
    for n in (1, 2):
        name = f"datatrove, {n} task(s)"
        task_cpu[name], task_cpu[f"{name}, one file"] = [], []
        runs[name] = partial(_datatrove_run, corpus, tasks=n, task_cpu=task_cpu[name])
        runs[f"{name}, one file"] = partial(
            _datatrove_run, tiny, tasks=n, task_cpu=task_cpu[f"{name}, one file"]
        )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    outputs: set[bytes] = set()
    for r in range(repeat):
        for i, (name, run) in enumerate(runs.items()):
            out = tmp / f"out-{r}-{i}.jsonl"
            before_cpu = _children_cpu()
            seconds[name].append(run(out))
            cpu[name].append(_children_cpu() - before_cpu)
            if "one file" not in name:
                outputs.add(out.read_bytes())
    files = list(corpus.rglob("*.py"))
    return {
        "files": len(files),
        "mb": sum(p.stat().st_size for p in files) / 1e6,
        "seconds": {name: statistics.median(times) for name, times in seconds.items()},
        "cpu": {name: statistics.median(times) for name, times in cpu.items()},
        "task_cpu": {name: statistics.median(times) for name, times in task_cpu.items()},
        "runs": seconds,
        "identical_outputs": len(outputs) == 1,
        "findings": len(next(iter(outputs)).splitlines()),
        "merge": merge_bench(tmp),
        "cores": _cores(),
        "load": os.getloadavg()[0],
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far. Processes a
    child starts and does not wait for (worker pools) may be missing: compare only runs
    in one process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli_run(corpus: Path, out: Path, jobs: int, repo: Path) -> float:
    return run_codeeraser(corpus, out, jobs, repo=repo)


def _datatrove_run(corpus: Path, out: Path, tasks: int, task_cpu: list[float]) -> float:
    """Wall seconds of the datatrove engine; the tasks' CPU seconds (summed, from their
    shard summaries) go to `task_cpu`."""
    work = out.with_suffix(".work")
    extra = ("--engine", "datatrove", "--tasks", str(tasks), "--workers", str(tasks))
    seconds = run_codeeraser(corpus, out, None, extra=(*extra, "--work-dir", str(work)))
    summaries = (work / "shards").glob("*.json")
    task_cpu.append(sum(json.loads(p.read_text())["cpu_seconds"] for p in summaries))
    shutil.rmtree(work)
    return seconds


def merge_bench(tmp: Path, findings: int = 400_000, tasks: int = 8) -> dict[str, float]:
    """Seconds to merge `findings` synthetic findings from `tasks` shards into one file."""
    from datatrove.io import get_datafolder

    from audit.datatrove_step import merge_shards
    from audit.findings import Finding
    from audit.shards import TaskOutput, sample_key, write_shard

    text = "x = 1\nTOKEN = 'abcdefghijklmnopqrstuvwx'\n"
    made = partial(Finding.create, text=text, start=11, end=35, secret_type="Secret Keyword",
                   detector="KeywordDetector")  # fmt: skip
    folder = get_datafolder(str(tmp / "merge-shards"))
    for rank in range(tasks):
        output = TaskOutput()
        output.summary.samples = findings // tasks
        for i in range(rank, findings, tasks):
            rel = f"src/m{i:07d}.py"
            output.findings.append(([*sample_key(rel, 0), 0], made(sample_id=rel, origin=rel)))
        write_shard(folder, rank=rank, world_size=tasks, settings="bench", output=output)
    started = time.perf_counter()
    merge_shards(str(tmp / "merge-shards"), tmp / "merged.jsonl", data="bench")
    seconds = time.perf_counter() - started
    return {"findings": findings, "tasks": tasks, "seconds": seconds}


# Assumptions of the 1 TB estimate, printed with it (the findings per MB are measured).
TB = 1e12
CORES_PER_MACHINE = 32


def scale_report(result: dict[str, Any]) -> str:
    """The side-by-side table and the 1 TB extrapolation with its assumptions."""
    mb, secs = result["mb"], result["seconds"]
    lines = [
        f"{result['files']} files (copies of the standard library), {mb:.1f} MB, "
        f"{result['findings']} findings; {result['cores']} cores (load average "
        f"{result['load']:.1f} at the end); median of "
        f"{len(next(iter(result['runs'].values())))} interleaved runs, process start "
        f"included; outputs identical: {result['identical_outputs']}",
        "",
        "| run | wall s | MB/s | vs cli --jobs 1 | CPU s (one process) | tasks' CPU s |",
        "|---|---|---|---|---|---|",
    ]
    base = secs["cli --jobs 1"]
    for name, seconds in secs.items():
        rate = "" if "one file" in name else f"{mb / seconds:.2f}"
        single = "jobs 1" in name or "1 task" in name
        used = f"{result['cpu'][name]:.2f}" if single else ""
        tasks = f"{result['task_cpu'][name]:.2f}" if name in result["task_cpu"] else ""
        lines.append(
            f"| {name} | {seconds:.2f} | {rate} | {base / seconds:.2f}x | {used} | {tasks} |"
        )
    if "before: cli --jobs 1" in secs:
        ratios = [secs[f"before: cli --jobs {n}"] / secs[f"cli --jobs {n}"] for n in (1, 2)]
        cpu = result["cpu"]["before: cli --jobs 1"] / result["cpu"]["cli --jobs 1"]
        lines += ["", "local engine, speed of this tree over the tree before: wall time "
                  f"--jobs 1 {ratios[0]:.2f}x, --jobs 2 {ratios[1]:.2f}x; CPU time "
                  f"--jobs 1 {cpu:.2f}x"]  # fmt: skip
    merge = result["merge"]
    merge_rate = merge["findings"] / merge["seconds"]
    lines += ["", f"merge: {merge['findings']} findings from {merge['tasks']} shards in "
              f"{merge['seconds']:.1f} s ({merge_rate:,.0f} findings/s)", ""]  # fmt: skip
    density = result["findings"] / mb
    lines += extrapolate(mb / result["task_cpu"]["datatrove, 1 task(s)"], merge_rate, density)
    return "\n".join(lines)


def extrapolate(task_mb_s: float, merge_rate: float, findings_per_mb: float) -> list[str]:
    """Minutes to scan 1 TB on N machines of CORES_PER_MACHINE cores, one task per core,
    then merge its findings on one core."""
    lines = [
        f"1 TB estimate: {task_mb_s:.2f} MB per CPU second in a task (the one-task run's "
        "task CPU time), "
        f"{CORES_PER_MACHINE} tasks per machine, merge of {findings_per_mb:.1f} findings/MB "
        f"at {merge_rate:,.0f} findings/s on one core:",
        "",
        "| machines | scan minutes | merge minutes | total minutes |",
        "|---|---|---|---|",
    ]
    merge_min = TB / 1e6 * findings_per_mb / merge_rate / 60
    for machines in (1, 4, 16, 64):
        scan_min = TB / 1e6 / (task_mb_s * CORES_PER_MACHINE * machines) / 60
        total = scan_min + merge_min
        lines.append(f"| {machines} | {scan_min:.0f} | {merge_min:.0f} | {total:.0f} |")
    return lines


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=int, default=360, help="files in the corpus, in all")
    parser.add_argument("--stdlib", type=int, default=150, help="of which standard-library files")
    parser.add_argument("--repeat", type=int, default=3, help="codeeraser runs (median)")
    parser.add_argument("--keep", type=Path, help="keep the generated corpus in this folder")
    parser.add_argument("--no-scaling", action="store_true", help="skip the standard-library run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scan.json")
    parser.add_argument("--cases", action="store_true", help="only the case suite")
    parser.add_argument("--compare", action="store_true", help="only the standard-library speed")
    parser.add_argument("--small", action="store_true", help="--compare on modules under 60 KB")
    parser.add_argument(
        "--datatrove", action="store_true", help="only the datatrove engine and the 1 TB estimate"
    )
    parser.add_argument(
        "--before", type=Path, help="with --datatrove: a checkout of the code before, run beside"
    )
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    if args.datatrove:
        with tempfile.TemporaryDirectory() as tmp:
            scaled = datatrove_bench(Path(tmp), args.repeat, args.before)
        print(scale_report(scaled))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name("scan-datatrove.json").write_text(json.dumps(scaled, indent=1))
        return 0
    if args.cases:
        print(suite_report(case_suite(args.seed)))
        return 0
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            compared = stdlib_comparison(Path(tmp), args.small)
            stages = profile_stages(Path(tmp) / "stdlib-compare")
        print(compare_report(compared, stages))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.keep or Path(tmp) / "corpus"
        items = generate(corpus, args.seed, args.files, args.stdlib)
        files = [p for p in corpus.rglob("*") if p.is_file()]
        findings = Path(tmp) / "findings.jsonl"
        load_before = os.getloadavg()[0]
        ds_seconds, theirs = run_detect_secrets(corpus)
        ours_all = [run_codeeraser(corpus, findings, None) for _ in range(args.repeat)]
        ours_one = statistics.median(
            run_codeeraser(corpus, findings, 1) for _ in range(args.repeat)
        )
        ours = [json.loads(line) for line in findings.read_text().splitlines()]
        result = score(items, ours, theirs)
        result["timing"] = {
            "files": len(files),
            "mb": sum(p.stat().st_size for p in files) / 1e6,
            "ds": ds_seconds,
            "ours": statistics.median(ours_all),
            "ours_1": ours_one,
            "cores": _cores(),
            "load": [load_before, os.getloadavg()[0]],
        }
        result["corpus"] = {"items": [asdict(i) for i in items], "seed": args.seed}
        if not args.no_scaling:
            result["scaling"] = scaling(Path(tmp), args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    planted = [i for i in items if not i.decoy]
    background = sum(1 for p in files if p.relative_to(corpus).parts[0] == "stdlib")
    print(
        f"corpus: {len(files)} files, {len(planted)} planted secrets of "
        f"{len({i.kind for i in planted})} kinds in {len({i.path.split('/')[0] for i in items})} "
        f"languages/formats, {len(items) - len(planted)} decoys, "
        f"{background} unchanged standard-library files\n"
    )
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
