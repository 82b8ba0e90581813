"""Shared fixtures. Torch runs on one thread in tests: processes may overlap on 2 cores.

The thread count is set through ``OMP_NUM_THREADS`` before anything imports torch, so
test files that never touch torch (scanning, policies, reports) do not pay the few
seconds its import costs, and subprocesses started by tests inherit the setting.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from gate.demo.build import DemoBuild

os.environ["OMP_NUM_THREADS"] = "1"
if "torch" in sys.modules:  # imported by a plugin before this file: set it directly
    sys.modules["torch"].set_num_threads(1)


# Opt-in tests: a test with one of these markers runs only when its variable is 1.
OPT_IN = {"zoo": "CODEERASER_ZOO", "real_model": "CODEERASER_REAL_MODEL"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, variable in OPT_IN.items():
            if item.get_closest_marker(marker) and os.environ.get(variable) != "1":
                item.add_marker(pytest.mark.skip(reason=f"opt-in: set {variable}=1 to run"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    """The `tiny` demo build: corpus, held-out split, findings and a model that memorized
    its planted secrets (about 30 s to build on one thread).

    Set ``CODEERASER_TEST_CACHE`` to a folder to reuse the build across test runs;
    otherwise it is built fresh in a temporary folder, as in CI.
    """
    import torch

    from gate.demo.build import build_demo

    torch.set_num_threads(1)
    cache = os.environ.get("CODEERASER_TEST_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("demo-cache")
    return build_demo("tiny", cache_dir=root, seed=0)
