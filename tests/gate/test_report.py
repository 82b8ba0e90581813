from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from urllib.parse import quote

import jsonschema
import pytest
from click.testing import CliRunner

from gate.cli import cli
from gate.report import (
    build_sarif,
    finding_level,
    md_escape,
    render_html,
    render_markdown,
    sarif_uri,
    write_and_publish,
    write_reports,
)
from tests.gate import fakes

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif-schema-2.1.0.json"


def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema)


# ---------------------------------------------------------------- SARIF


@pytest.mark.parametrize(
    ("before", "after"),
    [(fakes.LEAKY, fakes.CLEAN), (fakes.LEAKY, fakes.PARTLY), (fakes.CLEAN, None)],
)
def test_sarif_validates_against_the_2_1_0_schema(
    before: fakes.FakeModel, after: fakes.FakeModel | None
) -> None:
    doc = build_sarif(fakes.build_record(before, after, xss=True))
    sarif_validator().validate(doc)


def test_the_schema_check_can_fail() -> None:
    doc = build_sarif(fakes.build_record(fakes.LEAKY, fakes.PARTLY))
    doc["runs"][0]["results"][0]["level"] = "critical"
    with pytest.raises(jsonschema.ValidationError):
        sarif_validator().validate(doc)


def test_sarif_results_for_a_failing_run() -> None:
    record = fakes.build_record(fakes.LEAKY, fakes.PARTLY)
    run = build_sarif(record)["runs"][0]
    results = run["results"]
    assert len(results) == len(record.findings)  # every finding is still memorized
    assert {r["level"] for r in results} == {"error"}  # memorized-rate blocks
    by_id = {r["partialFingerprints"]["codeeraserFindingId/v1"]: r for r in results}
    for row in record.findings:
        result = by_id[row.id]
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == row.origin
        assert location["region"] == {"startLine": row.line, "startColumn": row.column}
        assert row.preview in result["message"]["text"]
        assert "memorized-rate" in result["message"]["text"]
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert sorted(rule_ids) == sorted({r["ruleId"] for r in results})
    assert all(rule_ids[r["ruleIndex"]] == r["ruleId"] for r in results)
    assert "codeeraser/memorized/aws-access-key" in rule_ids


def test_sarif_levels_follow_rule_severity(tmp_path: Path) -> None:
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(
        "rules:\n- {metric: extracted_greedy, limit: 0}\n"
        "- {metric: memorized_rate, limit: 0.01, severity: warn}\n",
        encoding="utf-8",
    )
    from gate.policy import load_policy

    record = fakes.build_record(fakes.LEAKY, fakes.PARTLY, policy=load_policy(policy_path))
    assert record.outcome == "remediated"  # extraction stopped; the warn rule does not block
    levels = {r["level"] for r in build_sarif(record)["runs"][0]["results"]}
    assert levels == {"warning"}


def test_erased_findings_stay_as_notes_and_clean_ones_are_absent() -> None:
    remediated = fakes.build_record()
    results = build_sarif(remediated)["runs"][0]["results"]
    assert {r["level"] for r in results} == {"note"}
    assert all("rotate the secret" in r["message"]["text"] for r in results)
    assert build_sarif(fakes.build_record(fakes.CLEAN))["runs"][0]["results"] == []


def test_sarif_uri_is_a_relative_reference() -> None:
    assert sarif_uri("src/a b.py") == "src/a%20b.py"
    assert sarif_uri("data.jsonl:12") == "data.jsonl%3A12"  # not a URI scheme
    assert sarif_uri("/abs/x.py") == "abs/x.py"


# ---------------------------------------------------------------- HTML


def test_html_shows_verdict_rules_charts_remediation_and_provenance() -> None:
    record = fakes.build_record()
    page = render_html(record)
    assert "PASSED after remediation" in page
    for rule in ("no-greedy-extraction", "memorized-rate", "perplexity-budget"):
        assert rule in page
    assert page.count("<svg") == 2
    assert "Memorization accuracy (MA)" in page
    assert "Extraction likelihood (EL_10)" in page
    assert "all forget samples below thresholds" in page  # remediation stop reason
    assert "a" * 64 in page
    assert "b" * 64 in page
    assert "0" * 64 in page  # original model hash
    assert "+3.0%" in page  # perplexity change
    for row in record.findings:
        assert row.preview in page
        assert row.id in page


@pytest.mark.parametrize(
    ("before", "after", "headline"),
    [
        (fakes.CLEAN, None, "PASSED"),
        (fakes.LEAKY, fakes.CLEAN, "PASSED after remediation"),
        (fakes.LEAKY, fakes.PARTLY, "FAILED"),
        (fakes.LEAKY, None, "FAILED"),
    ],
)
def test_banner_per_outcome(
    before: fakes.FakeModel, after: fakes.FakeModel | None, headline: str
) -> None:
    page = render_html(fakes.build_record(before, after))
    assert f'<span id="verdict-text">{headline}</span>' in page


def test_html_of_an_error_record() -> None:
    record = fakes.build_record(fakes.LEAKY, None)
    record.outcome, record.exit_code, record.error = "error", 3, "model failed to load <bad>"
    page = render_html(record)
    assert "ERROR" in page
    assert "model failed to load &lt;bad&gt;" in page


def test_html_is_self_contained() -> None:
    page = render_html(fakes.build_record(xss=True))
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", page, re.I)
    assert "url(" not in page
    assert "@import" not in page
    assert "Content-Security-Policy" in page


def test_script_in_origin_and_context_renders_as_text() -> None:
    page = render_html(fakes.build_record(xss=True))
    assert fakes.XSS not in page
    assert html.escape(fakes.XSS) in page
    summary = render_markdown(fakes.build_record(fakes.LEAKY, fakes.PARTLY, xss=True))
    assert "<script" not in summary


def test_unmeasured_findings_are_flagged() -> None:
    record = fakes.build_record(fakes.CLEAN)
    record.findings[0].measurements.clear()
    record.findings_summary.total.measured -= 1
    assert "(3 measured: extraction.max_findings)" in render_html(record)
    assert "measured:" not in render_html(fakes.build_record(fakes.CLEAN))


def test_findings_table_is_capped_by_the_policy(tmp_path: Path) -> None:
    record = fakes.build_record(xss=True)
    record.policy.resolved["report"]["max_findings_listed"] = 2
    page = render_html(record)
    assert "3 more findings" in page


# ---------------------------------------------------------------- markdown


def test_markdown_summary() -> None:
    summary = render_markdown(fakes.build_record(fakes.LEAKY, fakes.PARTLY))
    assert summary.startswith("## CodeEraser Gate audit: FAILED\n")
    assert "| memorized-rate | block | ≤ 1.00% | 100.00% FAIL | 100.00% FAIL |" in summary
    assert "Held-out perplexity: 10.00 → 10.30 (+3.0%)" in summary
    remediated = render_markdown(fakes.build_record())
    assert "Release **/out/remediated-model**" in remediated


def test_markdown_escaping() -> None:
    assert md_escape("a|b *c* [d](e)") == r"a\|b \*c\* \[d\]\(e\)"
    assert md_escape("two\nlines") == "two lines"


# ---------------------------------------------------------------- files


def test_write_reports_writes_the_requested_formats(tmp_path: Path) -> None:
    record = fakes.build_record()
    written = write_reports(record, tmp_path / "all")
    assert sorted(p.name for p in written.values()) == [
        "record.json",
        "report.html",
        "results.sarif",
        "summary.md",
    ]
    only = write_reports(record, tmp_path / "two", ["sarif", "md"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["results.sarif", "summary.md"]
    assert set(only) == {"sarif", "md"}
    record.policy.resolved["report"]["formats"] = ["html"]
    assert list(write_reports(record, tmp_path / "policy")) == ["html"]


def test_write_and_publish_always_writes_the_record(tmp_path: Path) -> None:
    record = fakes.build_record()
    record.policy.resolved["report"]["formats"] = ["html"]
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "gh-output")}
    written = write_and_publish(record, tmp_path / "out", env)
    assert sorted(written) == ["html", "json"]
    outputs = (tmp_path / "gh-output").read_text(encoding="utf-8")
    assert f"report={written['html']}\n" in outputs
    assert "verdict=passed\n" in outputs


def test_utility_with_humaneval_is_shown() -> None:
    figures = fakes.utility_figures(perplexity=(10.0, 10.2), humaneval=(0.31, 0.3))
    page = render_html(fakes.build_record(utility=figures))
    assert "HumanEval pass@1" in page
    assert "31.0%" in page
    assert "-1.0 points" in page


def test_finding_level_ranks_block_over_warn(tmp_path: Path) -> None:
    record = fakes.build_record(fakes.LEAKY, None)
    row = record.findings[0]
    assert finding_level(record, row.id) == "error"
    assert finding_level(record, "no-such-finding") == "none"


# ---------------------------------------------------------------- redaction


def secret_forms(value: str) -> set[str]:
    """The plaintext in every encoding an output could carry it in."""
    forms = {
        value,
        html.escape(value),
        html.escape(value, quote=False),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe="/"),
        value.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    }
    forms.update(value[i : i + 8] for i in range(4, len(value) - 7))  # any 8 chars past a prefix
    return forms


def test_no_planted_secret_reaches_any_output(tmp_path: Path) -> None:
    """Plant secrets, run the reporting end to end, search every output for them."""
    out = tmp_path / "out"
    record = fakes.build_record(fakes.LEAKY, fakes.PARTLY, xss=True)
    write_reports(record, out)
    result = CliRunner().invoke(
        cli, ["report", str(out / "record.json"), "--out", str(out / "again")]
    )
    assert result.exit_code == 0, result.output
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(out / "gh-output"),
        "GITHUB_STEP_SUMMARY": str(out / "gh-summary"),
    }
    from gate.github import publish

    publish(record, render_markdown(record), out / "report.html", env)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 10
    texts = {str(p): p.read_text(encoding="utf-8") for p in files}
    texts["<terminal>"] = result.output
    texts["<repr>"] = repr(record)
    for kind, value in fakes.SECRETS.values():
        for form in secret_forms(value):
            for where, text in texts.items():
                assert form not in text, f"{kind} secret found in {where}"


def test_the_redaction_check_would_see_a_leak(tmp_path: Path) -> None:
    leak = fakes.SECRETS["password"][1]
    page = render_html(fakes.build_record(fakes.LEAKY, fakes.PARTLY)).replace(
        "Summary", f"Summary {leak}"
    )
    assert any(form in page for form in secret_forms(leak) - {leak})  # the escaped form


# ---------------------------------------------------------------- browser


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def png_colours(data: bytes, limit: int = 64) -> set[bytes]:
    """Distinct pixel values of an 8-bit RGB/RGBA PNG (stops counting at `limit`)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert colour_type in (2, 6)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, colours = bytearray(stride), set[bytes]()
    for y in range(height):
        start = y * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, bpp)
        colours.update(bytes(line[x : x + bpp]) for x in range(0, stride, bpp * 7))
        if len(colours) >= limit:
            break
        previous = line
    return colours


def unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + b) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 0xFF
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
    return line


def test_report_renders_in_a_real_browser(tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        if os.environ.get("CODEERASER_REQUIRE_BROWSER") == "1":
            pytest.fail("CODEERASER_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("chromium is not installed (set CODEERASER_REQUIRE_BROWSER=1 to require it)")
    record = fakes.build_record(xss=True)
    paths = write_reports(record, tmp_path / "out", ["html"])
    url = paths["html"].resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = run_browser(browser, tmp_path / "profile1", f"--screenshot={shot}", url)
    assert shot.is_file(), done.stderr[-2000:]
    assert len(png_colours(shot.read_bytes())) > 8  # a rendered page, not a blank one
    dom = run_browser(browser, tmp_path / "profile2", "--dump-dom", url).stdout
    assert "PASSED after remediation" in dom
    assert 'id="verdict-text"' in dom
    assert "<script" not in dom.lower()  # the planted tag stayed text
    assert html.escape(fakes.XSS, quote=False) in dom


def test_png_reader_sees_a_blank_image() -> None:
    width, height = 20, 3
    rows = b"".join(b"\x00" + b"\xff\xff\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    assert png_colours(png + chunk(b"IEND", b"")) == {b"\xff\xff\xff"}


def test_vendored_schema_is_the_oasis_file() -> None:
    import hashlib

    data = SCHEMA.read_bytes()
    note = (SCHEMA.parent / "sarif-schema-2.1.0.README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(data).hexdigest() in note
    schema = json.loads(data)
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    assert schema["properties"]["version"]["enum"] == ["2.1.0"]
