"""Models that are not what they claim to be: every command that loads one exits 3.

Each hostile model folder is the tiny demo model with one thing wrong, the way it goes
wrong in practice: weights saved from a DDP- or torch.compile-wrapped model (every
name prefixed), a config that asks for more layers or an untied head the weights do not
hold, a layer's tensors left out, a tensor of another shape, a stray tensor; or every
key right but the weights random, zero or NaN, or the tokenizer another model's of the
same vocabulary size. transformers would load each of them with at most a warning and
randomly initialised tensors; the measured model would then recite nothing and pass.
A tiny Llama with its untied head missing stands for the other architecture family.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gate.demo.build import DemoBuild
from tests.gate.bad_input import Build, Case, Env, run_case

MODELS = (
    "module-prefix", "orig-mod-prefix", "more-layers", "layer-dropped", "untied-no-head",
    "stray-tensor", "positions-shape", "vocabulary-shape", "random-weights", "zero-weights",
    "nan-weights", "foreign-tokenizer", "llama-untied-no-head", "llama-layer-dropped",
    "missing-shard",
)  # fmt: skip


def _edit_weights(folder: Path, edit: object) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    save_file(edit(tensors), path, metadata={"format": "pt"})  # type: ignore[operator]


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _gpt2_variant(name: str, folder: Path) -> None:
    import torch

    def prefixed(prefix: str) -> object:
        return lambda sd: {prefix + k: v for k, v in sd.items()}

    wpe, wte = "transformer.wpe.weight", "transformer.wte.weight"
    edits: dict[str, object] = {
        "module-prefix": prefixed("module."),
        "orig-mod-prefix": prefixed("_orig_mod."),
        "layer-dropped": lambda sd: {k: v for k, v in sd.items() if ".h.1." not in k},
        "stray-tensor": lambda sd: {**sd, "transformer.h.7.mlp.c_fc.weight": torch.zeros(4, 4)},
        "positions-shape": lambda sd: {**sd, wpe: sd[wpe][:64]},
        "vocabulary-shape": lambda sd: {**sd, wte: sd[wte][:256]},
        "random-weights": lambda sd: {k: torch.randn_like(v) * 0.02 for k, v in sd.items()},
        "zero-weights": lambda sd: {k: torch.zeros_like(v) for k, v in sd.items()},
        "nan-weights": lambda sd: {k: torch.full_like(v, float("nan")) for k, v in sd.items()},
    }  # fmt: skip
    if name in edits:
        _edit_weights(folder, edits[name])
    elif name == "more-layers":
        _edit_config(folder, n_layer=3)
    elif name == "untied-no-head":
        _edit_config(folder, tie_word_embeddings=False)
    elif name == "foreign-tokenizer":
        _foreign_tokenizer(folder)
    elif name == "missing-shard":
        _split_into_shards(folder)


def _foreign_tokenizer(folder: Path) -> None:
    """A byte-level BPE of the same size (512), trained on other text: every id means
    another string than the one the model learned."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    texts = [p.read_text() for p in sorted(Path(__file__).parents[2].glob("gate/*.py"))]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=512, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
    assert len(tokenizer) == 512


def _split_into_shards(folder: Path) -> None:
    """Two shards and an index, then the second shard lost."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model.safetensors").unlink()
    (folder / "model-00002-of-00002.safetensors").unlink()


def _llama(name: str, folder: Path, tokenizer_from: Path) -> None:
    """A tiny Llama with the demo tokenizer, its head untied; saved whole, then broken."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / file, folder / file)
    if name == "llama-untied-no-head":
        _edit_weights(folder, lambda sd: {k: v for k, v in sd.items() if k != "lm_head.weight"})
    else:
        _edit_weights(folder, lambda sd: {k: v for k, v in sd.items() if ".layers.1." not in k})


@pytest.fixture(scope="module")
def hostile_models(tiny_demo: DemoBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every hostile model folder, built once for the module."""
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hostile-models")
    for name in MODELS:
        folder = root / name
        if name.startswith("llama"):
            _llama(name, folder, tiny_demo.model_dir)
            continue
        shutil.copytree(tiny_demo.model_dir, folder)
        _gpt2_variant(name, folder)
    return root


def _measure(name: str) -> Build:
    return lambda env: env.measure(env.model(name))


def _calibrate(env: Env, name: str) -> list[str]:
    return [
        "calibrate", "--model", str(env.model(name)),
        "--unseen", str(env.demo.heldout_dir), "--out", str(env.tmp / "t.json"),
    ]  # fmt: skip


KEYS = "the checkpoint does not match the"
PROBE = "fails the sanity probe"
CASES = [
    Case("DDP module. prefix", _measure("module-prefix"), (KEYS, "missing", "'module.'"), 3),
    Case("torch.compile prefix", _measure("orig-mod-prefix"), (KEYS, "'_orig_mod.'"), 3),
    Case(
        "config with more layers than the weights",
        _measure("more-layers"),
        (KEYS, "12 tensors missing (transformer.h.2.", "config asks for tensors"),
        3,
    ),
    Case("a layer's tensors left out", _measure("layer-dropped"), (KEYS, "transformer.h.1."), 3),
    Case(
        "untied head without its weights",
        _measure("untied-no-head"),
        (KEYS, "1 tensor missing (lm_head.weight)"),
        3,
    ),
    Case("a stray tensor", _measure("stray-tensor"), (KEYS, "1 tensor unexpected"), 3),
    Case(
        "positions of another shape",
        _measure("positions-shape"),
        (KEYS, "1 tensor of another shape (transformer.wpe.weight)"),
        3,
    ),
    Case("embedding of another shape", _measure("vocabulary-shape"), (KEYS, "wte.weight"), 3),
    Case("random weights", _measure("random-weights"), (PROBE, "ln 512"), 3),
    Case("zero weights", _measure("zero-weights"), (PROBE,), 3),
    Case("NaN weights", _measure("nan-weights"), (PROBE, "not a number"), 3),
    Case(
        "tokenizer of another model, same size",
        _measure("foreign-tokenizer"),
        (PROBE, "tokenizer belongs to another model"),
        3,
    ),
    Case(
        "Llama: untied head without its weights",
        _measure("llama-untied-no-head"),
        ("the checkpoint does not match the llama", "lm_head.weight"),
        3,
    ),
    Case(
        "Llama: a layer left out",
        _measure("llama-layer-dropped"),
        ("does not match the llama", "model.layers.1."),
        3,
    ),
    Case("a shard of the weights lost", _measure("missing-shard"), ("failed to load",), 3),
    Case("calibrate: DDP prefix", lambda env: _calibrate(env, "module-prefix"), (KEYS,), 3),
    Case(
        "calibrate --data: random weights",
        lambda env: [*_calibrate(env, "random-weights"), "--data", str(env.demo.corpus_dir)],
        (PROBE,),
        3,
    ),
    Case(
        "erase: config with more layers",
        lambda env: env.erase(env.model("more-layers")),
        (KEYS,),
        3,
    ),
    Case(
        "gate: DDP prefix",
        lambda env: env.gate(model=env.model("module-prefix")),
        (KEYS, "'module.'"),
        3,
    ),
    Case(
        "gate: random weights",
        lambda env: env.gate(model=env.model("random-weights")),
        (PROBE,),
        3,
    ),
    Case(
        "gate: another model's tokenizer",
        lambda env: env.gate(model=env.model("foreign-tokenizer")),
        (PROBE,),
        3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_model_that_is_not_what_it_claims_exits_3(
    case: Case,
    tiny_demo: DemoBuild,
    hostile_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_case(case, Env(tmp_path, tiny_demo, monkeypatch, models=hostile_models))


def test_a_gate_stopped_by_a_bad_model_leaves_an_error_record_and_no_pass(
    tiny_demo: DemoBuild, hostile_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder says what happened: record.json with the error and the stages that
    finished, a report that says ERROR; never a PASSED left from before."""
    env = Env(tmp_path, tiny_demo, monkeypatch, models=hostile_models)
    out = tmp_path / "run"
    run_case(Case("gate", lambda e: e.gate(model=e.model("random-weights")), (PROBE,), 3), env)
    record = json.loads((out / "record.json").read_text())
    assert (record["outcome"], record["exit_code"]) == ("error", 3)
    assert PROBE in record["error"]
    assert record["finished_stages"] == ["scan"]
    assert record["released_model"] is None
    assert "ERROR" in (out / "report.html").read_text()
