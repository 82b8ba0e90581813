"""An independent greedy check of a gate run: HF ``generate`` on every measured finding.

    python bench/greedy_check.py RUN_FOLDER --data CORPUS [--original]

For each finding in the run's findings.jsonl (the measured ones), the text is tokenized
whole (as the model saw it); the prompt is the last ``extraction.prefix_tokens`` tokens
before the secret's first token (after the BOS when they are the whole file and the
tokenizer puts a BOS before every text); ``model.generate(do_sample=False)`` continues
it by the secret's token count (at most ``extraction.secret_tokens``) plus 4. The
secret counts as extracted when the decoded continuation starts with it (from its
first token's start; its first ``secret_tokens`` tokens, for a longer one). This is
not the tool's decoding (no batching, no probe cache, no token-level comparison), so
it checks it. The model is the run's remediated model if there is one, else the input
(``--original``: the input, against the run's measurements before). The result is
counts and the ids of disagreeing findings, never a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def check(run: Path, data: Path, *, original: bool = False) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audit.corpus import CorpusSpec, texts_for_findings
    from audit.findings import read_findings
    from gate.record import read_record

    record = read_record(run / "record.json")
    extraction = record.policy.resolved["extraction"]
    prefix, cap = int(extraction["prefix_tokens"]), int(extraction["secret_tokens"])
    remediated = record.remediation is not None and not original
    final = {m.finding_id: m for m in record.rows("after" if remediated else "before")}
    findings = [f for f in read_findings(run / "findings.jsonl") if f.id in final]
    texts = texts_for_findings(CorpusSpec(data), findings)
    chosen = run / "remediated-model" if remediated else Path(record.model.path)
    tokenizer = AutoTokenizer.from_pretrained(str(chosen))
    model = AutoModelForCausalLM.from_pretrained(str(chosen), dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]
    ours: dict[str, bool] = {}
    for f in findings:
        ours[f.id] = _extracted(
            model, tokenizer, texts[f.sample_id], (f.start, f.end), prefix=prefix, cap=cap
        )
    disagree = sorted(fid for fid in ours if ours[fid] != final[fid].extracted_greedy)
    return {
        "model": "remediated" if remediated else "original",
        "findings": len(ours),
        "extracted_by_generate": sum(ours.values()),
        "extracted_by_tool": sum(final[fid].extracted_greedy for fid in ours),
        "agree": len(ours) - len(disagree),
        "disagreeing_ids": disagree,
    }


def _extracted(
    model: Any, tokenizer: Any, text: str, span: tuple[int, int], *, prefix: int, cap: int
) -> bool:
    start, end = span
    import torch

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = enc["offset_mapping"]
    first = next(i for i, (_, stop) in enumerate(spans) if stop > start)
    last = next((i for i, (begin, _) in enumerate(spans) if begin >= end), len(spans))
    before, secret_ids = enc["input_ids"][:first], enc["input_ids"][first:last]
    n = len(secret_ids)
    target = text[spans[first][0] : end]  # from the first token that holds part of it
    if n > cap:
        target = text[spans[first][0] : spans[first + cap - 1][1]]
    ids = before[-prefix:] if prefix else []
    adds_bos = tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
    if adds_bos and len(before) <= prefix:  # the whole file: the model saw it after BOS
        ids = [tokenizer.bos_token_id, *ids]
    room = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
    ids = ids[-(room - min(n, cap) - 4) :]
    prompt = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=min(n, cap) + 4,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return bool(tokenizer.decode(out[0, len(ids) :]).startswith(target))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--original", action="store_true", help="check the input model")
    args = parser.parse_args()
    print(json.dumps(check(args.run, args.data, original=args.original), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
