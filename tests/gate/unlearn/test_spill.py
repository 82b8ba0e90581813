"""The weights' copy the lr probe restores from: on disk on the CPU, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gate.unlearn.spill import WeightCopy


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    wide = torch.randn(5, 7)
    return [
        torch.nn.Parameter(torch.randn(3, 4)),
        torch.nn.Parameter(wide.t()),  # not contiguous
        torch.nn.Parameter(torch.randn(())),  # a scalar
        torch.nn.Parameter(torch.randn(6, dtype=torch.bfloat16)),
    ]


def _scramble(params: list[torch.nn.Parameter]) -> None:
    with torch.no_grad():
        for p in params:
            p.add_(torch.ones_like(p))


@pytest.mark.parametrize("on_disk", [True, False])
def test_restore_puts_back_every_bit_any_number_of_times(tmp_path: Path, on_disk: bool) -> None:
    params = _params()
    before = [p.detach().clone() for p in params]
    copy = WeightCopy(params, tmp_path if on_disk else None)
    assert copy.on_disk is on_disk
    for _ in range(2):
        _scramble(params)
        copy.restore()
        for p, b in zip(params, before, strict=True):
            assert torch.equal(p.detach(), b)
            assert p.dtype == b.dtype
    assert not params[1].is_contiguous()  # restored in place, strides kept
    copy.close()


def test_the_copy_on_disk_leaves_no_file_behind(tmp_path: Path) -> None:
    copy = WeightCopy(_params(), tmp_path)
    copy.close()
    assert list(tmp_path.iterdir()) == []


def test_a_copy_cut_short_is_an_error_not_partial_weights(tmp_path: Path) -> None:
    params = _params()
    copy = WeightCopy(params, tmp_path)
    assert copy._file is not None
    copy._file.truncate(8)
    with pytest.raises(OSError, match="ended early"):
        copy.restore()
    copy.close()
