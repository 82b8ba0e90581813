"""Is the model we measure the model that will be released? The first check, on loading.

Every checkpoint tensor must be accounted for. transformers only warns when a
checkpoint's keys do not fit the architecture (a DDP ``module.`` prefix, a torch.compile
``_orig_mod.`` prefix, a config with more layers than the weights, an untied head
without its weights, a tensor of another shape): the tensors it did not find are
randomly initialised, and a random model recites no secret. `check_loading_info`
refuses any missing, unexpected or shape-mismatched key with a `ModelLoadError` (exit 3)
that names the first keys and the counts. Tied weights are judged by transformers
itself: a head tied to the embeddings is not "missing" when the config says it is
tied, and is when the config says it is not.

The second check, the sanity probe, is in `audit.sanity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audit.errors import ModelLoadError

_SHOWN_KEYS = 3
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.module.")


def check_loading_info(path: Path, model_type: str, info: Mapping[str, Any]) -> None:
    """Refuse a load that left tensors missing, unused or of another shape."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(str(k[0]) for k in info.get("mismatched_keys") or ())
    errors = [str(e) for e in info.get("error_msgs") or ()]
    parts = [
        _listed(len(missing), "missing", missing),
        _listed(len(unexpected), "unexpected", unexpected),
        _listed(len(mismatched), "of another shape", mismatched),
    ]
    problems = [p for p in parts if p]
    if not problems and not errors:
        return
    if errors and not problems:
        problems = [f"{len(errors)} loading error(s)"]
    raise ModelLoadError(
        f"{path}: the checkpoint does not match the {model_type} architecture: "
        f"{'; '.join(problems)}. Measuring it would measure randomly initialised tensors"
        f"{_hint(unexpected, missing)}"
    )


def _listed(count: int, what: str, keys: Sequence[str]) -> str:
    if not count:
        return ""
    shown = ", ".join(keys[:_SHOWN_KEYS]) + (", …" if count > _SHOWN_KEYS else "")
    return f"{count} tensor{'s' if count != 1 else ''} {what} ({shown})"


def _hint(unexpected: Sequence[str], missing: Sequence[str]) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if unexpected and all(k.startswith(prefix) for k in unexpected):
            return (
                f": its names start with {prefix!r} (a wrapped model was saved); save the "
                "unwrapped model with save_pretrained"
            )
    if missing and not unexpected:
        return (
            ": the config asks for tensors the weights do not hold (more layers, an untied "
            "head); save the config that belongs to the weights"
        )
    return ": save the model and its config together with save_pretrained"
