from __future__ import annotations

import math
from pathlib import Path
from unittest.mock import patch

import pytest
import torch

from audit.corpus import CorpusSpec
from audit.errors import InputError
from audit.findings import Finding, write_findings
from audit.sandbox import run_python
from audit.utility import (
    clean_texts,
    humaneval,
    humaneval_problems,
    perplexity,
    program_for,
    truncate_completion,
)
from tests.audit import tiny_lm

CODE = tiny_lm.CODE


def _model() -> torch.nn.Module:
    return tiny_lm.gpt2(seed=0)


def test_perplexity_of_one_window_is_the_library_loss() -> None:
    model, tok = _model(), tiny_lm.tokenizer()
    text = CODE[:200]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    assert ids.shape[1] <= tiny_lm.CONTEXT
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=ids).loss)
    result = perplexity(model, tok, [text])
    assert result.windows == 1
    assert result.tokens == ids.shape[1] - 1
    assert result.nll == pytest.approx(loss, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)


@pytest.mark.parametrize("budget", [1, 5 * 320])  # one position per chunk; five (V = 320)
def test_perplexity_a_chunk_of_positions_at_a_time_is_the_whole_logits_loss(budget: int) -> None:
    model, tok = _model(), tiny_lm.tokenizer()
    texts = [CODE, CODE[:90]]
    whole = perplexity(model, tok, texts, batch_tokens=10**6)
    with patch("audit.model.split_head", return_value=None):  # the model's own logits
        unsplit = perplexity(model, tok, texts, batch_tokens=10**6)
    with patch("audit.model.LOGIT_BUDGET", budget):
        chunked = perplexity(model, tok, texts, batch_tokens=10**6)
    assert chunked.tokens == unsplit.tokens == whole.tokens
    assert chunked.nll == pytest.approx(unsplit.nll, rel=1e-6)  # summation order: float32
    assert whole.nll == pytest.approx(unsplit.nll, rel=1e-6)


def test_perplexity_is_token_weighted_and_independent_of_batching() -> None:
    model, tok = _model(), tiny_lm.tokenizer()
    texts = [CODE, CODE[:90], CODE * 3]
    one = perplexity(model, tok, texts, batch_tokens=1)
    many = perplexity(model, tok, texts, batch_tokens=10**6)
    assert one.tokens == many.tokens
    assert one.nll == pytest.approx(many.nll, rel=1e-5)
    # by hand: every window alone, weighted by its scored tokens
    total, count = 0.0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), tiny_lm.CONTEXT):
            window = torch.tensor([ids[i : i + tiny_lm.CONTEXT]])
            if window.shape[1] < 2:
                continue
            with torch.no_grad():
                total += float(model(input_ids=window, labels=window).loss) * (window.shape[1] - 1)
            count += window.shape[1] - 1
    assert many.nll == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(InputError, match="at least 2 tokens"):
        perplexity(model, tok, ["x"])


def test_clean_texts_leave_out_samples_with_findings(tmp_path: Path) -> None:
    data = tmp_path / "heldout"
    data.mkdir()
    (data / "clean.py").write_text("x = 1\n")
    secret_text = "KEY = 'AKIAQWERTYUIOPASDFGH'\n"
    (data / "dirty.py").write_text(secret_text)
    finding = Finding.create(
        sample_id="dirty.py",
        origin="dirty.py",
        text=secret_text,
        start=7,
        end=27,
        secret_type="AWS Access Key",
        detector="test",
    )
    write_findings(tmp_path / "controls.jsonl", [finding])
    spec = CorpusSpec(data)
    assert [i for i, _ in clean_texts(spec)] == ["clean.py", "dirty.py"]
    assert [i for i, _ in clean_texts(spec, [tmp_path / "controls.jsonl"])] == ["clean.py"]


def test_completions_stop_at_the_end_of_the_function() -> None:
    body = "    return a + b\n"
    assert truncate_completion(body + "\ndef other():\n    pass\n") == body
    assert truncate_completion(body + "\nprint(add(1, 2))\n") == body
    assert truncate_completion(body) == body


def test_canonical_solutions_pass_and_wrong_ones_fail_in_the_sandbox() -> None:
    for problem in humaneval_problems(limit=3):
        good = run_python(program_for(problem, problem["canonical_solution"]))
        assert good.status == "passed", problem["task_id"]
        wrong = run_python(program_for(problem, "    return None\n"))
        assert wrong.status == "failed", problem["task_id"]


def test_a_completion_that_exits_before_its_tests_ran_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sys.exit(0)`, `os._exit(0)`, `raise SystemExit` in the function, or an exit at
    module level before `check` runs: each ends the program with status 0, and each is
    scored as a failure. The right answer beside them still passes."""
    from audit import utility

    problems = humaneval_problems(limit=5)
    early = [
        "    import sys\n    sys.exit(0)\n",
        "    import os\n    os._exit(0)\n",
        "    raise SystemExit(0)\n",
        None,  # the canonical solution, then an exit at module level
        "",
    ]
    completions = [
        problem["canonical_solution"] + "\nimport sys\nsys.exit(0)\n"
        if head is None
        else head + problem["canonical_solution"]
        for head, problem in zip(early, problems, strict=True)
    ]
    for problem, completion in zip(problems, completions, strict=True):  # as before: exit 0
        assert run_python(program_for(problem, completion)).status == "passed"
    monkeypatch.setattr(utility, "_complete", lambda *args: completions)
    result = humaneval(None, None, limit=5)  # type: ignore[arg-type]
    assert result.statuses == {"failed": 4, "passed": 1}
    assert result.passed == 1


def test_humaneval_runs_generated_code_and_counts_outcomes() -> None:
    model, tok = _model(), tiny_lm.tokenizer()
    result = humaneval(model, tok, limit=2, max_new_tokens=8)
    assert result.problems == 2
    assert sum(result.statuses.values()) == 2
    assert result.pass_at_1 == result.passed / 2
    assert "rlimits" in result.isolation


def test_hostile_completions_are_contained_and_scored_as_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generated code that writes outside its folder, opens a socket, fork-bombs or loops
    forever, each before the right answer: every one is stopped and scored as a failure,
    and none has an effect outside the sandbox."""
    import os
    import socket
    import uuid

    from audit import utility
    from audit.sandbox import SandboxLimits

    problems = humaneval_problems(limit=4)
    target = tmp_path / f"escaped-{uuid.uuid4().hex}"
    os.chmod(tmp_path, 0o777)  # anyone may write here: only the sandbox can stop it
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        hostile = [
            f"    open({str(target)!r}, 'w').write('x')\n",
            "    import socket\n"
            f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)\n",
            "    import os\n    while True:\n        os.fork()\n",
            "    while True:\n        pass\n",
        ]
        completions = [h + p["canonical_solution"] for h, p in zip(hostile, problems, strict=True)]
        monkeypatch.setattr(utility, "_complete", lambda *args: completions)
        limits = SandboxLimits(timeout_s=2, cpu_s=2)
        result = humaneval(None, None, limit=4, limits=limits)  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected
    assert result.problems == 4
    assert result.passed == 0
    assert result.pass_at_1 == 0.0
    assert result.statuses == {"failed": 3, "timeout": 1}
    assert not target.exists()
