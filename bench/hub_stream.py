"""Scanning a Hub dataset by id: peak memory against the dataset's size (streamed).

Writes two Hub datasets into an offline Hub cache (the layout huggingface_hub writes:
datasets--ORG--NAME/{blobs,refs,snapshots/<commit>}), of the same synthetic code
records (about 480 characters each, one in 50 with a planted AWS key id) in Parquet
files of 10,000 records, one of them 10 times the other's size; runs
`codeeraser scan ORG/NAME --jobs 1` on each in its own process with HF_HUB_OFFLINE=1,
and reports each process's peak resident memory (wait4's ru_maxrss), wall time and
findings. Streaming means the peak should not grow with the size.

    python bench/hub_stream.py [--rows 20000] [--factor 10]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hub_cache import populate  # noqa: E402  # the test's cache writer

PART = 10_000  # records per Parquet file
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def record(i: int, rng: random.Random) -> dict[str, str]:
    body = "".join(
        f"def handler_{i}_{j}(event, context):\n    total = sum(x * {j} for x in event)\n"
        f"    return {{'status': 200, 'total': total}}\n\n"
        for j in range(4)
    )
    if i % 50 == 0:
        key = "AKIA" + "".join(rng.choice(ALPHABET) for _ in range(16))
        body += f"AWS_ACCESS_KEY_ID = '{key}'\n"
    return {"id": f"r{i}", "path": f"src/mod_{i}.py", "content": body}


def parquet(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def build(cache: Path, name: str, rows: int) -> int:
    """The dataset `bench/NAME` with `rows` records; returns its bytes of text."""
    rng = random.Random(0)
    files: dict[str, bytes | Path] = {}
    chars = 0
    for start in range(0, rows, PART):
        part = [record(i, rng) for i in range(start, min(rows, start + PART))]
        chars += sum(len(r["content"]) for r in part)
        files[f"data/train-{start // PART:05d}.parquet"] = parquet(part)
    commit = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()
    populate(cache, f"bench/{name}", files, commit=commit, repo_type="dataset")
    return chars


def scan(cache: Path, name: str, out: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache.parent / "datasets"),
    }
    args = [sys.executable, "-m", "gate", "-q", "scan", f"bench/{name}", "--jobs", "1"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*args, "--out", str(out)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"scan of bench/{name} failed")
    findings = sum(1 for _ in out.open())
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "findings": findings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "hub"
        results = {}
        for name, rows in (("small", args.rows), ("large", args.rows * args.factor)):
            chars = build(cache, name, rows)
            figures = scan(cache, name, Path(tmp) / f"{name}.jsonl")
            results[name] = {"rows": rows, "chars": chars, **figures}
            print(
                f"{name}: {rows} records, {chars / 1e6:.1f} M characters: peak "
                f"{figures['peak_mb']:.0f} MB, {figures['seconds']:.1f} s, "
                f"{figures['findings']:.0f} findings",
                flush=True,
            )
    ratio = results["large"]["peak_mb"] / results["small"]["peak_mb"]
    print(f"peak memory, large over small ({args.factor}x the records): {ratio:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
