"""Upper bounds of every number that sizes memory or time, for policies and options.

A policy or an option past one of these is an input error (exit 2) before any work,
not a run that exhausts the machine. The bounds are far above any sensible setting:
they stop a typo (an extra zero or three) or a hostile file, not a large model.
"""

from __future__ import annotations

MAX_POLICY_BYTES = 256 * 1024  # a policy file; the longest built-in one is under 6 KB
MAX_POLICY_VALUES = 20_000  # YAML values after alias expansion (a 1 KB alias bomb: billions)
MAX_POLICY_DEPTH = 32  # nesting of mappings and lists

MAX_TOKENS = 131_072  # prefix, secret, window and sequence lengths (clamped to the context)
MAX_BATCH_TOKENS = 1 << 26  # padded tokens per batch (64 M)
MAX_SAMPLES = 1_000  # sampled-attack draws per finding
MAX_TOP_K = 1 << 20  # tokens kept by top-k sampling (above any vocabulary)
MAX_FINDINGS = 100_000_000  # findings measured (a cap, not a size)
MAX_EPOCHS = 10_000  # unlearning epochs, patience, checkpoint interval
MAX_ROUNDS = 100  # erase → measure rounds of the closed loop
MAX_BATCH_SIZE = 65_536  # windows per unlearning step
MAX_WINDOWS = 1_000_000  # retain windows, held-out samples, unseen sequences
MAX_RANK = 65_536  # LoRA rank
MAX_CACHE_MB = 1 << 22  # KL cache memory (4 TB)
MAX_LISTED = 1_000_000  # findings listed in the HTML report
