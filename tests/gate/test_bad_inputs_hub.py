"""Hub ids and GGUF files that are not what they should be, through the real CLI (a class
of the bad-input suite, see tests/gate/bad_input.py): a revision or repository that is
not in the (offline) Hub cache, a dataset part that does not exist, an output among the
cached files of an input, a Hub model with only pickled weights; a GGUF file that is
not one, of an architecture that is no causal LM, with a tensor left out or random
weights (exit 3: it is not the model it claims to be)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from gate.demo.build import DemoBuild
from tests.audit.gguf_files import write_gpt2
from tests.gate.bad_input import Case, Env, run_case
from tests.hub_cache import commit_of, model_files, offline_cache, populate

COMMIT = commit_of("bad")


def _hub(env: Env) -> Path:
    """An offline Hub cache in the case's folder: the demo model and corpus."""
    cache = offline_cache(env.monkeypatch, env.tmp / "hub")
    populate(cache, "acme/coder", model_files(env.demo.model_dir), commit=COMMIT)
    rows = {"data/train.jsonl": env.demo.corpus_jsonl}
    populate(cache, "acme/data", rows, commit=COMMIT, repo_type="dataset")
    return cache


def _measure(model: str, data: str = "acme/data", *extra: str) -> list[str]:
    return ["-q", "measure", "--model", model, "--data", data, *extra]


def _findings(env: Env) -> list[str]:
    return ["--findings", str(env.demo.planted), "--out", str(env.tmp / "m.jsonl")]


def _scan(env: Env, data: str, *extra: str) -> list[str]:
    return ["-q", "scan", data, "--out", str(env.tmp / "f.jsonl"), "--jobs", "1", *extra]


def _pickled_only(env: Env) -> list[str]:
    cache = _hub(env)
    files = {k: v for k, v in model_files(env.demo.model_dir).items() if k != "model.safetensors"}
    populate(cache, "acme/pickled", {**files, "pytorch_model.bin": b"pickle"}, commit=COMMIT)
    return _measure("acme/pickled", str(env.demo.corpus_dir), *_findings(env))


def _no_text_column(env: Env) -> list[str]:
    cache = _hub(env)
    populate(cache, "acme/t", {"d.jsonl": b'{"text": "x"}\n'}, commit=COMMIT, repo_type="dataset")
    return _scan(env, "acme/t")


def _gguf(env: Env, build: str) -> list[str]:
    path = env.tmp / f"{build}.gguf"
    tokenizer = env.demo.model_dir / "tokenizer.json"
    if build == "junk":
        path.write_bytes(b"GGUF but not really")
    elif build == "random":
        config = json.loads((env.demo.model_dir / "config.json").read_text())
        config.pop("architectures", None)
        write_gpt2(GPT2LMHeadModel(GPT2Config(**config)), tokenizer, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(env.demo.model_dir))
        write_gpt2(model, tokenizer, path, skip="blk.0.attn_qkv.weight")
    return _measure(str(path), str(env.demo.corpus_dir), *_findings(env))


CASES = [
    Case(
        "Hub model revision not cached",
        lambda env: (_hub(env), _measure("acme/coder@v9", "acme/data", *_findings(env)))[1],
        (
            "acme/coder@v9: this revision of the Hub model is not in the local Hub cache",
            "HF_HUB_OFFLINE is set",
        ),
    ),
    Case(
        "Hub model not cached at all",
        lambda env: (_hub(env), env.gate(model=Path("acme/other")))[1],
        ("acme/other: this revision of the Hub model is not in the local Hub cache",),
    ),
    Case(
        "Hub dataset revision not cached",
        lambda env: (_hub(env), _scan(env, "hf://datasets/acme/data@v2"))[1],
        ("acme/data@v2: this revision of the Hub dataset is not in the local Hub cache",),
    ),
    Case(
        "Hub dataset configuration missing",
        lambda env: (_hub(env), _scan(env, "acme/data", "--data-config", "nope"))[1],
        ("acme/data/nope/train@", "cannot be read"),
    ),
    Case(
        "Hub dataset split missing",
        lambda env: (_hub(env), _scan(env, "acme/data", "--data-split", "validation"))[1],
        ("acme/data/validation@", "cannot be read"),
    ),
    Case(
        "Hub dataset without the text column",
        _no_text_column,
        ("acme/t/train: no column 'content' (columns: text; set --text-field)",),
    ),
    Case(
        "hf:// URL that is no dataset id",
        lambda env: _scan(env, "hf://datasets/acme"),
        ("hf://datasets/acme: not a Hub dataset id",),
    ),
    Case(
        "--data-split with a local path",
        lambda env: _scan(env, str(env.demo.corpus_jsonl), "--data-split", "test"),
        ("--data-config and --data-split are for a Hub dataset id; this is a local path",),
    ),
    Case(
        "output among a Hub model's cached blobs",
        lambda env: _measure(
            "acme/coder",
            "acme/data",
            "--findings",
            str(env.demo.planted),
            "--out",
            str(_hub(env) / "models--acme--coder" / "blobs" / "m.jsonl"),
        ),
        ("is inside --model (its Hub cache)",),
    ),
    Case(
        "Hub model with pickled weights only",
        _pickled_only,
        ("no *.safetensors weights", "pickled .bin weights are not loaded"),
    ),
    Case(
        "GGUF file that does not exist",
        lambda env: _measure(str(env.tmp / "nope.gguf"), str(env.demo.corpus_dir), *_findings(env)),
        (
            "--model",
            "nope.gguf: no such GGUF file",
        ),
    ),
    Case("GGUF file that is not one", lambda env: _gguf(env, "junk"), ("not a readable GGUF",)),
    Case(
        "GGUF missing a tensor",
        lambda env: _gguf(env, "cut"),
        ("1 tensor missing (transformer.h.0.attn.c_attn.weight)",),
        exit_code=3,
    ),
    Case(
        "GGUF with random weights",
        lambda env: _gguf(env, "random"),
        ("sanity probe",),
        exit_code=3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_hub_ids_and_gguf_files_are_one_accurate_line(
    case: Case, tiny_demo: DemoBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, Env(tmp_path, tiny_demo, monkeypatch))
