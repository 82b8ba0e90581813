"""An independent greedy check of a gate run: Hugging Face `generate`, not our decoder.

The tool decodes greedily with its own batched, cache-reusing loop (audit/decoding.py).
This script asks the same question of the same model through `model.generate` (greedy,
one finding at a time, no cache tricks) and compares the verdicts finding by finding:

    python bench/generate_check.py --model RUN/remediated-model --data CORPUS \\
        --findings RUN/findings.jsonl --measurements RUN/measurements.after.jsonl

The prompt is the attacker's prefix as the tool defines it (`audit.probes`: the
`--prefix-tokens` tokens before the secret, as the measurements were taken with);
`generate` continues it for the secret's length plus the decode margin, and a finding
counts as extracted when the secret's text appears in the continuation. It prints the
counts (agreeing, extracted by one side only) and the ids of the findings where the two
disagree, never a secret; `--out` writes the same as JSON. Exit code 0 when they agree on
every finding, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from audit.corpus import CorpusSpec, load_texts
from audit.errors import InputError
from audit.findings import read_findings
from audit.measurements import read_measurements
from audit.model import LoadedModel, load_model
from audit.probes import DEFAULT_DECODE_MARGIN, DEFAULT_PREFIX_TOKENS, Probe, build_probes


@dataclass
class Agreement:
    """How the tool's greedy verdicts compare with `generate`'s, finding by finding."""

    findings: int = 0
    extracted_by_tool: int = 0
    extracted_by_generate: int = 0
    tool_only: list[str] = field(default_factory=list)  # finding ids
    generate_only: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.tool_only and not self.generate_only


def generate_extracts(loaded: LoadedModel, probe: Probe, margin: int) -> bool:
    """Greedy `generate` from the probe's prefix reproduces the secret's text."""
    prompt = torch.tensor([probe.prefix_ids], device=loaded.device)
    pad = loaded.tokenizer.pad_token_id
    pad = loaded.tokenizer.eos_token_id if pad is None else pad
    with torch.no_grad():
        out = loaded.model.generate(  # type: ignore[operator]
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=probe.m + margin,
            pad_token_id=pad,
        )
    new = out[0, prompt.shape[1] :].tolist()
    text = loaded.tokenizer.decode(new, clean_up_tokenization_spaces=False)
    return bool(probe.secret) and probe.secret in text


def compare(
    loaded: LoadedModel, probes: list[Probe], tool: dict[str, bool], margin: int
) -> Agreement:
    """Run `generate` on every probe and hold it against the tool's verdict."""
    result = Agreement()
    for probe in probes:
        ours, theirs = tool[probe.finding_id], generate_extracts(loaded, probe, margin)
        result.findings += 1
        result.extracted_by_tool += ours
        result.extracted_by_generate += theirs
        if ours and not theirs:
            result.tool_only.append(probe.finding_id)
        elif theirs and not ours:
            result.generate_only.append(probe.finding_id)
    return result


def check(args: argparse.Namespace) -> Agreement:
    """Load the run's inputs and compare every measured finding."""
    measured = {m.finding_id: m for m in read_measurements(args.measurements)}
    findings = [f for f in read_findings(args.findings) if f.id in measured]
    if not findings:
        raise InputError(f"{args.measurements}: no finding of {args.findings} is measured in it")
    loaded = load_model(args.model, device=args.device)
    texts = load_texts(CorpusSpec(path=args.data), {f.sample_id for f in findings})
    probes = build_probes(
        findings,
        texts,
        loaded.tokenizer,
        context_length=loaded.context_length,
        prefix_tokens=args.prefix_tokens,
        decode_margin=args.margin,
    )
    tool = {f.id: measured[f.id].extracted_greedy for f in findings}
    return compare(loaded, probes, tool, args.margin)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="the model the run measured")
    p.add_argument("--data", type=Path, required=True, help="the training data (local path)")
    p.add_argument("--findings", type=Path, required=True, help="the run's findings.jsonl")
    p.add_argument("--measurements", type=Path, required=True, help="measurements.*.jsonl")
    p.add_argument("--prefix-tokens", type=int, default=DEFAULT_PREFIX_TOKENS)
    p.add_argument("--margin", type=int, default=DEFAULT_DECODE_MARGIN)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="write the comparison as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = check(args)
    except InputError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    summary = {**asdict(result), "agree": result.agree}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{result.findings} findings: extracted greedily by the tool {result.extracted_by_tool},"
        f" by HF generate {result.extracted_by_generate}; disagreeing: tool only"
        f" {len(result.tool_only)}, generate only {len(result.generate_only)}"
    )
    for name, ids in (("tool only", result.tool_only), ("generate only", result.generate_only)):
        if ids:
            print(f"{name}: {', '.join(ids)}")
    return 0 if result.agree else 1


if __name__ == "__main__":
    sys.exit(main())
