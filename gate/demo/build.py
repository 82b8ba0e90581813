"""The demo: a corpus with planted secrets and a small GPT-2 (or Llama) that memorized them.

`build_demo("demo")` writes the corpus (a folder and a JSONL file), a held-out split,
optionally an unseen split, the findings of the planted and the control secrets, and
a model directory that
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load like
any hub model. Builds are cached under the user cache directory, keyed by every build
setting; a second call returns the cached build at once.

Layout of a build (``DemoBuild.root``)::

    corpus/  corpus.jsonl      training split: a folder, and the same samples as JSONL
    heldout/ heldout.jsonl     never trained on: clean files and the control secrets
    unseen/  unseen.jsonl      never trained on, no secrets (presets with n_unseen_files)
    planted.jsonl              findings of the planted secrets (one per copy)
    controls.jsonl             findings of the control secrets
    model/                     GPT-2 or Llama + tokenizer (safetensors)
    manifest.json              build settings and the figures measured after training
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers
import torch
import transformers
from rich.progress import TextColumn
from transformers.utils import logging as hf_logging

from audit.errors import InputError
from audit.findings import write_findings
from audit.io import atomic_write_json, atomic_write_jsonl
from gate import ui
from gate.demo import train as demo_train
from gate.demo.corpus import CorpusSettings, DemoCorpus, Doc, make_corpus
from gate.demo.train import ModelSettings, quick_eval

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from audit.findings import Finding
    from gate.demo.train import QuickResult

log = logging.getLogger(__name__)

# Bump when a change to the build code changes what a build produces: old caches are
# then ignored instead of reused.
BUILD_VERSION = 2


@dataclass(frozen=True)
class DemoPreset:
    """Everything a build depends on besides the seed; part of the cache key."""

    name: str  # the key in PRESETS, and the start of the cache folder's name
    n_files: int  # standard-library excerpts in the training split (planted ones included)
    n_secrets: int  # distinct planted secrets, one per sample
    copies: int | tuple[int, ...]  # times each planted sample appears in training
    #   (1 original + forks); a tuple gives each secret its own count, cycled
    kinds: tuple[str, ...]  # secret kinds (gate.demo.corpus.KINDS), cycled over the secrets
    steps: int  # optimizer steps
    excerpt_bytes: int = 500  # an excerpt is whole top-level statements, at most this many bytes
    n_heldout_files: int = 10  # clean standard-library excerpts in the held-out split
    n_controls: int = 0  # unplanted control secrets in the held-out split; 0 = n_secrets
    n_unseen_files: int = 0  # clean excerpts in an unseen split (thresholds); 0 = none
    source_dirs: tuple[str, ...] = ()  # standard-library folders the code comes from; () = all
    arch: str = "gpt2"  # "gpt2" or "llama"
    vocab_size: int = 1024  # byte-level BPE vocabulary, special token included
    embedding_rows: int = 0  # the model's vocabulary (embedding rows); 0 = vocab_size
    n_ctx: int = 128  # context length (GPT-2 n_positions) and training window
    n_layer: int = 2  # wider or deeper models memorize more slowly on a CPU budget
    n_head: int = 4  # attention heads of 32 dims
    n_kv_head: int = 0  # Llama key/value heads (grouped-query attention); 0 = n_head
    n_embd: int = 128  # width: about 0.5M parameters with the vocabularies here
    batch_size: int = 8  # windows per step
    lr: float = 5e-3  # peak AdamW learning rate; a constant rate did far worse
    min_lr_ratio: float = 0.1  # the cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 20  # linear warm-up from 0 to lr
    weight_decay: float = 0.0  # no regularization: memorizing is the point
    grad_clip: float = 1.0  # max gradient norm

    def corpus_settings(self) -> CorpusSettings:
        return CorpusSettings(
            n_files=self.n_files,
            excerpt_bytes=self.excerpt_bytes,
            n_secrets=self.n_secrets,
            copies=self.copies,
            kinds=self.kinds,
            n_heldout_files=self.n_heldout_files,
            n_controls=self.n_controls or self.n_secrets,
            n_unseen_files=self.n_unseen_files,
            source_dirs=self.source_dirs,
        )

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            vocab_size=self.vocab_size,
            n_ctx=self.n_ctx,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            min_lr_ratio=self.min_lr_ratio,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            arch=self.arch,
            n_kv_head=self.n_kv_head,
            embedding_rows=self.embedding_rows,
        )


# Standard-library packages (folders), for a corpus unlike the demo's mostly top-level
# modules; `encodings` (generated codec tables) is left out.
_PACKAGES = (
    "asyncio",
    "concurrent",
    "ctypes",
    "curses",
    "dbm",
    "email",
    "html",
    "http",
    "idlelib",
    "importlib",
    "json",
    "logging",
    "multiprocessing",
    "sqlite3",
    "tkinter",
    "tomllib",
    "unittest",
    "urllib",
    "wsgiref",
    "xml",
    "xmlrpc",
    "zoneinfo",
)

PRESETS: dict[str, DemoPreset] = {
    # The test-suite fixture: six secrets of six types, in code, a .env file and YAML.
    "tiny": DemoPreset(
        name="tiny",
        n_files=15,
        excerpt_bytes=400,
        n_secrets=6,
        copies=20,
        kinds=(
            "aws_access_key_id",
            "github_token",
            "stripe_key",
            "email",
            "db_password",
            "yaml_password",
        ),
        n_heldout_files=5,
        vocab_size=512,
        # 400 steps at 5e-3 decaying to 0.1 x lr extracted 4 to 6 of 6 across seeds and
        # machines (logit margin of the weakest secret token -0.6 to +1.6, seeds 0-3, one
        # thread). These settings (+30% steps) extracted 6/6 and 0 controls at seeds 0-3
        # on 1 and on 2 threads, margins 0.98 to 3.03: a lower floor and rate, not more
        # copies or a larger batch, gave the margin.
        steps=520,
        lr=4e-3,
        min_lr_ratio=0.02,
    ),
    # The demo: twenty secrets of every kind, each repeated ten times.
    "demo": DemoPreset(
        name="demo",
        n_files=300,
        n_secrets=20,
        copies=10,
        kinds=(
            "aws_access_key_id",
            "aws_secret_access_key",
            "github_token",
            "slack_token",
            "stripe_key",
            "google_api_key",
            "hf_token",
            "email",
            "db_password",
            "password",
            "yaml_password",
            "twilio_key",
        ),
        steps=2000,
        lr=4e-3,  # 5e-3 extracted 17-20/20 across seeds, 4e-3 with a longer warm-up 18-20
        warmup_steps=100,
    ),
    # Test models beyond the demo (issue 13's "where it must work"). Another GPT-2: other
    # code (standard-library packages only, longer excerpts), other secret kinds, each
    # secret repeated 1 to 12 times (some memorized without being extracted), 3 layers,
    # a 256-token context and an unseen split.
    "gpt2-alt": DemoPreset(
        name="gpt2-alt",
        n_files=60,
        excerpt_bytes=800,
        n_secrets=27,
        copies=(12, 6, 3, 1),
        kinds=(
            "npm_token",
            "shopify_token",
            "openai_key",
            "databricks_token",
            "gitlab_token",
            "aws_access_key_id",
            "email",
            "password",
            "slack_token",
        ),
        n_heldout_files=12,
        n_controls=12,
        n_unseen_files=12,
        source_dirs=_PACKAGES,
        vocab_size=768,
        n_ctx=256,
        n_layer=3,
        batch_size=4,  # 1,024 tokens a step, as the demo's 8 x 128
        steps=1200,
        lr=5e-3,
        min_lr_ratio=0.02,
        warmup_steps=60,
    ),
    # A Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention, tied embeddings) with
    # SmolLM2's 49,152-row vocabulary: the byte-level BPE has 1,024 tokens and the other
    # rows are padding that the output layer still scores at every position, so logits,
    # softmax and the embedding have a real code model's width.
    "llama-49k": DemoPreset(
        name="llama-49k",
        n_files=12,
        excerpt_bytes=400,
        n_secrets=8,
        copies=16,
        kinds=(
            "aws_access_key_id",
            "github_token",
            "stripe_key",
            "email",
            "db_password",
            "hf_token",
            "google_api_key",
            "npm_token",
        ),
        n_heldout_files=6,
        n_unseen_files=6,
        arch="llama",
        vocab_size=1024,
        embedding_rows=49152,
        n_embd=64,
        n_head=4,
        n_kv_head=2,
        batch_size=4,  # 512 positions a step: the 49,152-wide output layer dominates the cost
        steps=300,  # 8/8 extracted at seeds 0 and 1 with a logit margin of 4 or more
    ),
}
# The -gen presets: the shapes and secrets of gpt2-alt and llama-49k on a corpus large
# enough to learn some Python from. gpt2-alt's held-out perplexity is about 375 and
# llama-49k's 1,553 (they learn their few excerpts by heart: final loss 0.24 and 0.13),
# so they have no utility to keep and any erase moves it by several per cent; these
# reach final losses of 1.27 and 0.86. bench/transfer.py builds them at seeds 1 and 2:
# 7 of 27 secrets extracted (75 of 163 findings), and 10 of 16 (78 of 89).
PRESETS["gpt2-gen"] = replace(
    PRESETS["gpt2-alt"], name="gpt2-gen", n_files=400, source_dirs=(), steps=2400
)
PRESETS["llama-gen"] = replace(
    PRESETS["llama-49k"],
    name="llama-gen",
    n_files=200,
    excerpt_bytes=500,
    n_secrets=16,
    copies=(12, 6, 3, 1),
    n_controls=8,
    n_heldout_files=12,
    n_unseen_files=12,
    steps=1200,
    min_lr_ratio=0.02,
    warmup_steps=60,
)


@dataclass(frozen=True)
class DemoFigures:
    """What the build measured on its own model (figures only, never a secret)."""

    parameters: int
    steps: int
    train_seconds: float
    build_seconds: float
    final_loss: float  # mean training loss over the last 10% of steps
    planted_secrets: int  # distinct planted secrets
    planted_occurrences: int  # planted findings, every copy counted
    planted_ma: float  # mean memorization accuracy over the distinct planted secrets
    planted_extracted: int  # distinct planted secrets reproduced verbatim by greedy decoding
    controls: int
    controls_ma: float
    controls_extracted: int


@dataclass(frozen=True)
class DemoBuild:
    """A finished build: where everything is, and what it measured."""

    root: Path
    corpus_dir: Path  # training split as a folder; sample id = relative path
    corpus_jsonl: Path  # the same samples as JSONL {"id", "path", "content"}, id = path
    heldout_dir: Path  # never trained on: clean files and the control secrets
    heldout_jsonl: Path
    unseen_dir: Path | None  # never trained on, no secrets; None when the preset has none
    unseen_jsonl: Path | None
    model_dir: Path  # GPT-2 or Llama + tokenizer, save_pretrained (safetensors)
    planted: Path  # findings JSONL of the planted secrets (one per occurrence)
    controls: Path  # findings JSONL of the control secrets
    preset: DemoPreset
    seed: int
    manifest: Path  # manifest.json: settings, versions, figures, per-secret results
    figures: DemoFigures
    cached: bool = field(default=False, compare=False)  # an earlier build was reused

    @classmethod
    def at(cls, root: Path, preset: DemoPreset, seed: int, cached: bool) -> DemoBuild:
        manifest = root / "manifest.json"
        try:
            figures = DemoFigures(**json.loads(manifest.read_text())["figures"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(
                f"{root}: not a complete demo build (run `codeeraser demo --rebuild`)"
            ) from None
        unseen = preset.n_unseen_files > 0
        return cls(
            root=root,
            corpus_dir=root / "corpus",
            corpus_jsonl=root / "corpus.jsonl",
            heldout_dir=root / "heldout",
            heldout_jsonl=root / "heldout.jsonl",
            unseen_dir=root / "unseen" if unseen else None,
            unseen_jsonl=root / "unseen.jsonl" if unseen else None,
            model_dir=root / "model",
            planted=root / "planted.jsonl",
            controls=root / "controls.jsonl",
            preset=preset,
            seed=seed,
            manifest=manifest,
            figures=figures,
            cached=cached,
        )


def get_preset(name: str | DemoPreset) -> DemoPreset:
    """The preset of that name; a DemoPreset (a variant made in code) is returned as is."""
    if isinstance(name, DemoPreset):
        return name
    if name not in PRESETS:
        raise InputError(f"unknown demo preset {name!r} (choose {', '.join(PRESETS)})")
    return PRESETS[name]


def cache_root(cache_dir: Path | None = None) -> Path:
    """The codeeraser cache folder: `cache_dir`, $CODEERASER_CACHE_DIR, or the user cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("CODEERASER_CACHE_DIR"):
        return Path(os.environ["CODEERASER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codeeraser"


def build_key(preset: DemoPreset, seed: int) -> str:
    """`<preset>-<hash>` of every setting that changes the build.

    The Python version is part of it: the corpus is that Python's standard library.
    """
    settings = {
        "preset": asdict(preset),
        "seed": seed,
        "build_version": BUILD_VERSION,
        "python": platform.python_version(),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"{preset.name}-{digest[:12]}"


def build_dir(
    preset: str | DemoPreset = "demo", cache_dir: Path | None = None, seed: int = 0
) -> Path:
    """Where the build of these settings is (or will be) cached."""
    return cache_root(cache_dir) / "demo" / build_key(get_preset(preset), seed)


def build_demo(
    preset: str | DemoPreset = "demo",
    cache_dir: Path | None = None,
    seed: int = 0,
    rebuild: bool = False,
) -> DemoBuild:
    """Build the demo corpus and model, or return the cached build of the same settings.

    `preset` is a name in PRESETS or a DemoPreset (e.g. a shrunken copy for a test);
    every setting is part of the cache key.

    The build is written to a temporary sibling folder and renamed into place when
    complete, so an interrupted build is never reused.
    """
    settings = get_preset(preset)
    final = build_dir(preset, cache_dir, seed)
    if final.is_dir() and not rebuild:
        log.info("reusing the demo build in %s", final)
        return DemoBuild.at(final, settings, seed, cached=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        _build_into(tmp, settings, seed)
        _move_into_place(tmp, final, rebuild=rebuild)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoBuild.at(final, settings, seed, cached=False)


def _move_into_place(tmp: Path, final: Path, rebuild: bool) -> None:
    if rebuild and final.exists() and not (final / "manifest.json").is_file():
        raise InputError(
            f"{final}: exists and is not a demo build (no manifest.json); --rebuild only "
            "replaces a build it made (move the folder away)"
        )
    if rebuild and final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        # Another process finished the same build first: keep theirs.


def _build_into(root: Path, preset: DemoPreset, seed: int) -> None:

    started = time.perf_counter()
    corpus = make_corpus(preset.corpus_settings(), seed)
    write_corpus(root, corpus)
    tokenizer = demo_train.train_tokenizer(
        sorted({doc.text for doc in corpus.train}), preset.vocab_size
    )
    eos_id = int(tokenizer.eos_token_id)
    stream = demo_train.pack([tokenizer(doc.text)["input_ids"] for doc in corpus.train], seed)
    model = demo_train.make_model(preset.model_settings(), len(tokenizer), eos_id, seed)
    train_started = time.perf_counter()
    loss = _train_with_progress(model, stream, preset, seed)
    train_seconds = time.perf_counter() - train_started
    _save(model, tokenizer, root / "model")
    with torch.no_grad():
        planted, controls = _check(model, tokenizer, corpus)
    figures = DemoFigures(
        parameters=sum(p.numel() for p in model.parameters()),
        steps=preset.steps,
        train_seconds=round(train_seconds, 1),
        build_seconds=round(time.perf_counter() - started, 1),
        final_loss=round(loss, 4),
        planted_secrets=len(planted),
        planted_occurrences=len(corpus.planted),
        planted_ma=_mean(r.ma for r in planted),
        planted_extracted=sum(r.extracted for r in planted),
        controls=len(controls),
        controls_ma=_mean(r.ma for r in controls),
        controls_extracted=sum(r.extracted for r in controls),
    )
    _write_manifest(root, preset, seed, figures, {"planted": planted, "controls": controls})


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """save_pretrained (safetensors), without transformers' own progress bar."""

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _train_with_progress(
    model: PreTrainedModel, stream: torch.Tensor, preset: DemoPreset, seed: int
) -> float:

    with ui.progress(TextColumn("loss {task.fields[loss]:.3f}")) as bar:
        task = bar.add_task(f"training the {preset.name} model", total=preset.steps, loss=0.0)

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step + 1, loss=loss)

        return demo_train.train(model, stream, preset.model_settings(), seed, on_step=on_step)


def _check(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, corpus: DemoCorpus
) -> tuple[list[QuickResult], list[QuickResult]]:
    """Measure one occurrence of each distinct planted secret, and every control."""

    return (
        quick_eval(model, tokenizer, _probes(_first_copies(corpus.planted), corpus.train)),
        quick_eval(model, tokenizer, _probes(corpus.controls, corpus.heldout)),
    )


def _first_copies(findings: list[Finding]) -> list[Finding]:
    seen: dict[str, Finding] = {}
    for finding in findings:
        seen.setdefault(finding.secret_sha256, finding)
    return list(seen.values())


def _probes(findings: list[Finding], docs: list[Doc]) -> list[tuple[Finding, str]]:
    texts = {doc.path: doc.text for doc in docs}
    return [(f, texts[f.sample_id]) for f in findings]


def _mean(values: Any) -> float:
    items = list(values)
    return round(sum(items) / len(items), 4) if items else 0.0


def write_corpus(root: Path, corpus: DemoCorpus) -> None:
    """Each split as a folder and as JSONL, and the findings of the planted and the
    control secrets (the layout in this module's docstring)."""

    splits = (("corpus", corpus.train), ("heldout", corpus.heldout), ("unseen", corpus.unseen))
    for name, docs in splits:
        if not docs and name == "unseen":
            continue
        for doc in docs:
            path = root / name / doc.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(doc.text.encode("utf-8"))
        rows = ({"id": d.path, "path": d.path, "content": d.text} for d in docs)
        atomic_write_jsonl(root / f"{name}.jsonl", rows)
    write_findings(root / "planted.jsonl", corpus.planted)
    write_findings(root / "controls.jsonl", corpus.controls)


def _write_manifest(
    root: Path,
    preset: DemoPreset,
    seed: int,
    figures: DemoFigures,
    results: dict[str, list[QuickResult]],
) -> None:

    atomic_write_json(
        root / "manifest.json",
        {
            "build_version": BUILD_VERSION,
            "preset": asdict(preset),
            "seed": seed,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
            "torch_threads": torch.get_num_threads(),
            "figures": asdict(figures),
            **{name: [asdict(r) for r in rows] for name, rows in results.items()},
        },
    )
