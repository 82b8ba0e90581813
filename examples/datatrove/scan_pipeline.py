"""The secrets scan as the last steps of an existing datatrove pipeline.

Your pipeline reads the raw data, filters and deduplicates it, rewrites what it must
(here: e-mail and IP addresses), and writes the training data. The scan goes after the
writer, so it scans exactly the text the model will be trained on; a second executor,
which waits for the first, merges the shards into one findings file. Then gate the
model on the written data with that file:

    python examples/datatrove/scan_pipeline.py RAW_DATA_FOLDER WORK_FOLDER
    codeeraser gate --model MODEL --data WORK_FOLDER/train --findings WORK_FOLDER/findings.jsonl \\
        --policy policy.yaml     # policy: scan: {format: jsonl, text_field: text}

Swap LocalPipelineExecutor for SlurmPipelineExecutor or RayPipelineExecutor (same
`depends=`) to run it on a cluster; put WORK_FOLDER on storage every node can reach.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("LOGURU_DIAGNOSE", "NO")  # tracebacks without variables (data)

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from audit.datatrove_step import MergeFindings, ScanSecrets


def pipeline(raw: str, work: str, tasks: int = 4) -> LocalPipelineExecutor:
    """Your steps, then the scan; and the merge that runs when every task has finished."""
    scan = LocalPipelineExecutor(
        [
            JsonlReader(raw, text_key="content"),  # your reader
            LambdaFilter(lambda doc: len(doc.text) > 0),  # your filters and dedup
            PIIFormatter(),  # rewrites text: scan after it, on what is written
            JsonlWriter(f"{work}/train"),  # the training data, as the model will see it
            ScanSecrets(f"{work}/shards"),  # one findings shard per task
        ],
        tasks=tasks,
        logging_dir=f"{work}/logs/scan",
    )
    merge = MergeFindings(f"{work}/shards", f"{work}/findings.jsonl", data=f"{work}/train")
    return LocalPipelineExecutor([merge], tasks=1, logging_dir=f"{work}/logs/merge", depends=scan)


if __name__ == "__main__":
    pipeline(sys.argv[1], sys.argv[2]).run()  # runs the scan first, then the merge
