from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.findings import Context, Finding
from audit.placeholders import PLACEHOLDER, matches_redacted, raw_length
from audit.redact import (
    is_redacted,
    placeholder,
    printable,
    redact_finding,
    redact_identifier,
    redact_strings,
)

GITHUB = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gH3jK5"
AWS = "AKIA" + "Z3MHQ7XK2PL4VN8R"


def test_secrets_in_names_ids_and_urls_become_stable_placeholders() -> None:
    url = f"https://bot:{GITHUB}@github.com/org/repo.git"
    assert redact_identifier(url) == f"https://bot:{placeholder(GITHUB)}@github.com/org/repo.git"
    assert redact_identifier(f"keys/{AWS}.py") == f"keys/{placeholder(AWS)}.py"
    assert (
        redact_identifier("mail/alice@corp.io.json") == f"mail/{placeholder('alice@corp.io')}.json"
    )
    assert placeholder(GITHUB).startswith("«ghp_…(40)#")
    assert PLACEHOLDER.fullmatch(placeholder(AWS)) is not None
    assert len(placeholder(AWS)) == len("«AKIA…(20)#12345678»")


def test_ordinary_identifiers_are_left_alone() -> None:
    for name in (
        "src/app.py", "data.jsonl:12", "corpus/pkg/__init__.py", "2d711642b726b044",
        "https://github.com/org/repo", "policies/default.yaml", "a.b.c/d.e",
    ):  # fmt: skip
        assert redact_identifier(name) == name
        assert not is_redacted(name)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["src/", GITHUB, AWS, "x.py", ":", "@", "https://u:", "alice@corp.io", "/"]
        ),
        max_size=6,
    ).map("/".join)
)
def test_redacting_twice_changes_nothing_and_leaves_no_secret(text: str) -> None:
    once = redact_identifier(text)
    assert redact_identifier(once) == once
    assert GITHUB not in once
    assert AWS not in once


def test_a_finding_gets_redacted_ids_and_an_id_made_from_them() -> None:
    text = f'TOKEN = "{GITHUB}"\n'
    finding = Finding.create(
        sample_id=f"{AWS}.py", origin=f"{AWS}.py", text=text, start=9, end=49,
        secret_type="GitHub Token", detector="GitHubTokenDetector",
        context=Context(kind="string", name=f"key_{AWS}"),
    )  # fmt: skip
    clean = redact_finding(finding)
    assert AWS not in repr(clean.to_dict())
    assert clean.sample_id == clean.origin == f"{placeholder(AWS)}.py"
    assert clean.id != finding.id
    assert redact_finding(clean) == clean


def test_printable_removes_what_a_terminal_would_obey() -> None:
    text = "data\x1b[2J\x1b]0;title\x07\u202etxt.exe\r\nnext\ud800"
    shown = printable(text)
    assert not any(c in shown for c in "\x1b\x07\u202e\r\n\ud800")
    assert "data" in shown
    assert "next" in shown
    assert printable("a\nb", one_line=False) == "a\nb"


def test_every_string_of_a_document_is_redacted() -> None:
    doc = {"path": f"/clones/{GITHUB}", "list": [AWS, 1, None], f"{AWS}": True}
    clean = redact_strings(doc)
    assert GITHUB not in repr(clean)
    assert AWS not in repr(clean)
    assert clean["list"][1:] == [1, None]


def test_a_redacted_id_still_names_its_sample_and_no_other() -> None:
    raw = f"clones/{AWS}/src/{GITHUB}.py"
    redacted = redact_identifier(raw)
    assert raw_length(redacted) == len(raw)
    assert matches_redacted(raw, redacted)
    other = raw.replace(AWS, "AKIA" + "Z3MHQ7XK2PL4VN8S")
    assert len(other) == len(raw)
    assert not matches_redacted(other, redacted)
    assert not matches_redacted(raw.replace("src", "lib"), redacted)
