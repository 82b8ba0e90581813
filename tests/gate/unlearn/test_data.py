from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from audit.errors import InputError
from audit.findings import Finding
from gate.unlearn.data import (
    ForgetWindow,
    RetainWindow,
    SecretSpan,
    _cover,
    build_forget_windows,
    build_retain_windows,
    clamp_tokens,
    collate,
)

CODE = "def handler(event, context):\n    value = compute(event)\n    return value\n"


def _secret(seed: int, n: int = 20) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(n))


def _sample(parts: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join code and secrets; every odd part is a secret; return text and secret spans."""
    text, spans = "", []
    for i, part in enumerate(parts):
        if i % 2:
            spans.append((len(text), len(text) + len(part)))
        text += part
    return text, spans


def _finding(sample_id: str, text: str, span: tuple[int, int]) -> Finding:
    return Finding.create(
        sample_id=sample_id,
        origin=sample_id,
        text=text,
        start=span[0],
        end=span[1],
        secret_type="Test Key",
        detector="test",
    )


def _decoded_secret(tok: PreTrainedTokenizerFast, window: ForgetWindow, fid: str) -> str:
    mask = window.secret_labels([fid])
    ids = [window.input_ids[j + 1] for j, on in enumerate(mask) if on]
    return str(tok.decode(ids))


def test_one_secret_gets_one_window_with_prefix_and_a_short_tail(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    secret = _secret(1)
    text, spans = _sample([CODE * 8 + "KEY = '", secret, "'\n" + CODE * 8])
    finding = _finding("a.py", text, spans[0])
    windows = build_forget_windows([finding], {"a.py": text}, bpe_tokenizer, 64)
    assert len(windows) == 1
    window = windows[0]
    assert len(window.input_ids) == 64
    (span,) = window.secrets
    assert span.finding_id == finding.id
    assert 64 - span.end == 64 // 8  # tail of window_tokens / 8 after the secret
    assert secret in _decoded_secret(bpe_tokenizer, window, finding.id)
    assert secret in bpe_tokenizer.decode(list(window.input_ids))
    assert secret not in repr(window)


def test_mask_is_aligned_with_next_token_labels(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    secret = _secret(2)
    text, spans = _sample([CODE + 'token = "', secret, '"\n'])
    finding = _finding("b.py", text, spans[0])
    (window,) = build_forget_windows([finding], {"b.py": text}, bpe_tokenizer, 512)
    assert len(window.input_ids) < 512  # a short sample is one whole window
    mask = window.secret_labels()
    assert len(mask) == len(window.input_ids) - 1
    first = mask.index(True)
    # label `first` is token first + 1: the first token that overlaps the secret
    (span,) = window.secrets
    assert first + 1 == span.start
    assert sum(mask) == span.end - span.start
    before = bpe_tokenizer.decode(list(window.input_ids[: span.start]))
    assert secret[0] not in before[-1:]  # the prefix ends before the secret starts


def test_close_secrets_share_a_window_and_far_ones_do_not(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    near, near_spans = _sample([CODE * 3 + "A='", _secret(3), "'\nB='", _secret(4), "'\n"])
    far, far_spans = _sample([CODE + "A='", _secret(5), "'\n" + CODE * 12 + "B='", _secret(6)])
    findings = [_finding("near.py", near, s) for s in near_spans]
    findings += [_finding("far.py", far, s) for s in far_spans]
    texts = {"near.py": near, "far.py": far}
    windows = build_forget_windows(findings, texts, bpe_tokenizer, 96)
    by_sample: dict[str, list[ForgetWindow]] = {}
    for window in windows:
        by_sample.setdefault(window.sample_id, []).append(window)
    assert len(by_sample["near.py"]) == 1
    assert len(by_sample["near.py"][0].secrets) == 2
    assert len(by_sample["far.py"]) == 2
    for finding in findings:
        holders = [w for w in windows if finding.id in w.finding_ids]
        assert len(holders) == 1


def test_a_secret_longer_than_a_window_is_split(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    secret = _secret(7, n=150)  # about one token per character
    text, spans = _sample([CODE * 2 + "KEY = '", secret, "'\n"])
    finding = _finding("long.py", text, spans[0])
    windows = build_forget_windows([finding], {"long.py": text}, bpe_tokenizer, 40)
    assert len(windows) > 3
    assert all(len(w.input_ids) <= 40 for w in windows)
    assert (
        "".join(_decoded_secret(bpe_tokenizer, w, finding.id) for w in windows).find(secret[1:])
        >= 0
    )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(5, 400),
    size=st.integers(2, 64),
    raw=st.lists(st.tuples(st.integers(0, 399), st.integers(1, 80)), min_size=1, max_size=5),
)
def test_windows_cover_every_secret_token(n: int, size: int, raw: list[tuple[int, int]]) -> None:
    spans = [
        SecretSpan(f"f{i}", min(a, n - 1), min(n, min(a, n - 1) + length))
        for i, (a, length) in enumerate(raw)
    ]
    spans.sort(key=lambda s: (s.start, s.end))
    ids = list(range(n))
    windows = list(_cover("s", ids, spans, size))
    covered: dict[str, set[int]] = {}
    for window in windows:
        assert 1 <= len(window.input_ids) <= size
        offset = window.input_ids[0]  # ids are positions, so this is the window's start
        for span in window.secrets:
            assert 0 <= span.start < span.end <= len(window.input_ids)
            covered.setdefault(span.finding_id, set()).update(
                range(offset + span.start, offset + span.end)
            )
    for span in spans:
        assert set(range(span.start, span.end)) <= covered[span.finding_id]


def test_mismatched_or_missing_samples_are_input_errors(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    text, spans = _sample([CODE, _secret(8), "\n"])
    finding = _finding("c.py", text, spans[0])
    with pytest.raises(InputError, match="not in the data"):
        build_forget_windows([finding], {}, bpe_tokenizer)
    with pytest.raises(InputError, match="does not match its hash") as info:
        build_forget_windows(
            [finding], {"c.py": text.replace(text[spans[0][0]], "#")}, bpe_tokenizer
        )
    assert _secret(8) not in str(info.value)


def test_collate_pads_right_and_marks_active_secrets(
    bpe_tokenizer: PreTrainedTokenizerFast,
) -> None:
    a = ForgetWindow("a", (5, 6, 7, 8, 9, 10), (SecretSpan("x", 2, 4), SecretSpan("y", 4, 5)))
    r = RetainWindow("r", (11, 12, 13))
    batch = collate([a, r], pad_id=0, active={"y"})
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch.valid.tolist() == [[True] * 5, [True, True, False, False, False]]
    # labels are tokens 1..5: secret x is tokens 2-3 -> labels 1-2, y is token 4 -> label 3
    assert batch.secret.tolist()[0] == [False, True, True, True, False]
    assert batch.active.tolist()[0] == [False, False, False, True, False]
    assert batch.context.tolist()[0] == [True, False, False, False, True]
    assert not batch.secret[1].any()
    assert torch.equal(batch.labels, batch.input_ids[:, 1:])


def test_retain_windows_are_sampled_reproducibly(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    texts = [(f"s{i}.py", CODE * (1 + i % 5)) for i in range(40)]
    one = build_retain_windows(iter(texts), bpe_tokenizer, retain_tokens=16, count=10, seed=3)
    two = build_retain_windows(iter(texts), bpe_tokenizer, retain_tokens=16, count=10, seed=3)
    assert one == two
    assert len(one) == 10
    assert len({w.sample_id for w in one}) == 10
    assert all(2 <= len(w.input_ids) <= 16 for w in one)
    other = build_retain_windows(iter(texts), bpe_tokenizer, retain_tokens=16, count=10, seed=4)
    assert [w.sample_id for w in other] != [w.sample_id for w in one]


def test_clamp_tokens_fits_the_context() -> None:
    assert clamp_tokens(512, 128, "window tokens") == 128
    assert clamp_tokens(64, 128, "window tokens") == 64
    with pytest.raises(InputError, match="window tokens"):
        clamp_tokens(1, 128, "window tokens")


def test_copies_of_a_sample_share_one_window(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    text, spans = _sample([CODE * 4 + "KEY = '", _secret(9), "'\n"])
    texts = {f"forks/{k}/a.py": text for k in range(3)} | {"other.py": CODE + text}
    findings = [_finding(sample_id, text, spans[0]) for sample_id in sorted(texts)[:3]]
    shifted = spans[0][0] + len(CODE), spans[0][1] + len(CODE)
    findings.append(_finding("other.py", texts["other.py"], shifted))
    windows = build_forget_windows(findings, texts, bpe_tokenizer, 48)
    # the 48 tokens before the secret are the same in all four samples: one window
    assert len(windows) == 1
    assert windows[0].finding_ids == {f.id for f in findings}
    # one finding of the four selects the same label positions as all four
    assert windows[0].secret_labels([findings[0].id]) == windows[0].secret_labels()
    wide = build_forget_windows(findings, texts, bpe_tokenizer, 512)
    assert len(wide) == 2  # whole samples: the three copies, and the longer sample
    assert sorted(len(w.finding_ids) for w in wide) == [1, 3]
