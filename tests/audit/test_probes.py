from __future__ import annotations

import copy

import pytest

from audit.errors import InputError
from audit.findings import Finding
from audit.probes import build_probes
from tests.audit import tiny_lm

SECRET = "Zq8vLk2Pw9Xr4Tn7Bm3Hc6"


def finding(text: str, value: str, sample_id: str = "a.py") -> Finding:
    start = text.index(value)
    return Finding.create(
        sample_id=sample_id,
        origin=sample_id,
        text=text,
        start=start,
        end=start + len(value),
        secret_type="test",
        detector="test",
    )


def whole_text_tokens(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tiny_lm.tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def test_secret_tokens_are_the_in_context_tokens_not_the_secret_alone() -> None:
    tok = tiny_lm.tokenizer()
    text = tiny_lm.CODE
    f = finding(text, "json.load")  # preceded by a space: the first token carries it
    (probe,) = build_probes([f], {"a.py": text}, tok, context_length=128)
    ids, offsets = whole_text_tokens(text)
    overlapping = [k for k, (s, e) in enumerate(offsets) if s < f.end and e > f.start]
    assert probe.secret_ids == tuple(ids[overlapping[0] : overlapping[-1] + 1])
    assert probe.prefix_ids == tuple(ids[: overlapping[0]])  # the file start is near
    assert list(probe.secret_ids) != tok("json.load", add_special_tokens=False)["input_ids"]
    assert probe.lead == " "
    assert probe.secret == "json.load"
    assert not probe.truncated


def test_prefix_is_the_tokens_just_before_the_secret_in_a_long_file() -> None:
    text = tiny_lm.CODE * 12 + f'KEY = "{SECRET}"\n'
    f = finding(text, SECRET)
    (probe,) = build_probes(
        [f], {"a.py": text}, tiny_lm.tokenizer(), context_length=2048, prefix_tokens=100
    )
    ids, offsets = whole_text_tokens(text)
    first = next(k for k, (s, e) in enumerate(offsets) if e > f.start)
    assert probe.prefix_ids == tuple(ids[first - 100 : first])
    assert probe.secret_ids == tuple(ids[first : first + probe.m])


def test_short_context_clamps_the_prefix_and_cuts_the_secret() -> None:
    long_secret = SECRET * 3  # about 60 tokens
    text = tiny_lm.CODE + f'KEY = "{long_secret}"\n'
    f = finding(text, long_secret)
    (probe,) = build_probes(
        [f],
        {"a.py": text},
        tiny_lm.tokenizer(),
        context_length=40,
        max_secret_tokens=100,
        decode_margin=8,
    )
    assert probe.truncated
    assert probe.m == 40 - 8 - 1
    assert len(probe.prefix_ids) + probe.m + 8 <= 40
    assert long_secret.startswith(probe.secret)
    assert len(probe.secret) < len(long_secret)
    (capped,) = build_probes([f], {"a.py": text}, tiny_lm.tokenizer(), context_length=128)
    assert capped.truncated
    assert capped.m == 32
    assert len(capped.prefix_ids) == 128 - 8 - 32


def test_secret_at_the_start_of_a_file_is_prompted_with_the_start_token() -> None:
    text = f"{SECRET} = 1\n"
    (probe,) = build_probes(
        [finding(text, SECRET)], {"a.py": text}, tiny_lm.tokenizer(), context_length=128
    )
    assert probe.prefix_ids == (tiny_lm.tokenizer().bos_token_id,)


def test_findings_from_another_corpus_name_the_finding_and_not_the_secret() -> None:
    text = f'KEY = "{SECRET}"\n'
    f = finding(text, SECRET)
    other = text.replace(SECRET, SECRET[::-1])
    with pytest.raises(InputError, match=f.id) as info:
        build_probes([f], {"a.py": other}, tiny_lm.tokenizer(), context_length=128)
    assert "another corpus" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET[::-1] not in str(info.value)
    with pytest.raises(InputError, match="not in the data"):
        build_probes([f], {"b.py": text}, tiny_lm.tokenizer(), context_length=128)


def test_probe_repr_hides_the_secret() -> None:
    text = f'KEY = "{SECRET}"\n'
    (probe,) = build_probes(
        [finding(text, SECRET)], {"a.py": text}, tiny_lm.tokenizer(), context_length=128
    )
    assert probe.secret == SECRET
    assert SECRET not in repr(probe)
    assert SECRET not in str(probe)


def test_too_short_a_context_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too short"):
        build_probes([], {}, tiny_lm.tokenizer(), context_length=5)


def test_a_prefix_reaching_the_file_start_gets_the_bos_a_llama_tokenizer_adds() -> None:
    from tokenizers import processors

    tok = tiny_lm.tokenizer()
    bos_first = copy.deepcopy(tok)
    bos_first.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tiny_lm.EOS} $A", special_tokens=[(tiny_lm.EOS, tok.bos_token_id)]
    )
    assert bos_first("x")["input_ids"][0] == tok.bos_token_id
    text = f'KEY = "{SECRET}"\n'
    f = finding(text, SECRET)
    (plain,) = build_probes([f], {"a.py": text}, tok, context_length=128)
    (llama,) = build_probes([f], {"a.py": text}, bos_first, context_length=128)
    assert llama.prefix_ids == (tok.bos_token_id, *plain.prefix_ids)
    far = tiny_lm.CODE * 3 + text  # the prefix does not reach the file start: no BOS
    (cut,) = build_probes([finding(far, SECRET)], {"a.py": far}, bos_first, context_length=128)
    assert tok.bos_token_id not in cut.prefix_ids
