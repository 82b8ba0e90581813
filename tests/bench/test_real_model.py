"""bench/real_model.py: SmolLM2-135M fine-tuned on planted secrets recites them and not
the controls (opt-in: CODEERASER_REAL_MODEL=1 after `make install-real`; the first run
builds the model into the user cache, 15-25 minutes on 2 CPU cores)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from audit.corpus import CorpusSpec, iter_samples
from audit.findings import Finding, read_findings
from tests.bench import load_script

pytestmark = pytest.mark.real_model


def _script() -> ModuleType:
    return load_script("real_model")


def _texts(path: Path) -> dict[str, str]:
    return {s.id: s.text for s in iter_samples(CorpusSpec(path))}


def _distinct(findings: list[Finding]) -> list[Finding]:
    return list({f.secret_sha256: f for f in findings}.values())


def test_the_real_model_recites_planted_secrets_but_not_controls(tmp_path: Path) -> None:
    """Loaded from its folder like any hub model and measured with HF `generate` (not the
    build's own decoding): most duplicated secrets come back from 128 tokens of the code
    before them, no control does; the folder can be loaded and saved again (as an erase
    does), which the GGUF `quantization_config` would prevent."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    build = _script().build_real()
    assert "quantization_config" not in json.loads((build.model_dir / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(build.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(build.model_dir)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == 49152
    planted = read_findings(build.planted)
    copies = Counter(f.secret_sha256 for f in planted)

    def recited(finding: Finding, text: str) -> bool:
        """The text tokenized whole; the prompt is the 128 tokens before the secret's first."""
        encoding = tokenizer(text, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        span = [i for i, (a, b) in enumerate(offsets) if a < finding.end and b > finding.start]
        ids = encoding["input_ids"][max(0, span[0] - 128) : span[0]]
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=len(span) + 4,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return text[finding.start : finding.end] in tokenizer.decode(out[0, len(ids) :])

    train, heldout = _texts(build.corpus_dir), _texts(build.heldout_dir)
    duplicated = [f for f in _distinct(planted) if copies[f.secret_sha256] >= 5]
    assert len(duplicated) >= 5
    hits = sum(recited(f, train[f.sample_id]) for f in duplicated)
    assert hits >= len(duplicated) // 2
    assert not any(recited(f, heldout[f.sample_id]) for f in read_findings(build.controls))
    model.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").is_file()
