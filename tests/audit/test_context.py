from __future__ import annotations

import pytest

from audit.context import GRAMMARS, SourceContext, parser_for

S = "S3CR3TVALUE"  # the span each case asks about

# (language, text, expected kind, expected name)
CASES: list[tuple[str | None, str, str, str | None]] = [
    ("python", f'password = "{S}"\n', "string", "password"),
    ("python", f'conn = connect(host="h", password="{S}")\n', "string", "password"),
    ("python", f'cfg = {{"api_key": "{S}"}}\n', "string", "api_key"),
    ("python", f'self.token = "{S}"\n', "string", "self.token"),
    ("python", f'x: str = "{S}"\n', "string", "x"),
    ("python", f'def f(secret="{S}"):\n    pass\n', "string", "secret"),
    ("python", f"# token: {S}\nx = 1\n", "comment", None),
    ("python", f'def f():\n    """Use {S} here."""\n    return 1\n', "docstring", None),
    ("python", f'"""Module {S}."""\nimport os\n', "docstring", None),
    ("python", f'print("{S}")\n', "string", "print"),
    ("python", f"x = {S}\n", "other", "x"),
    ("javascript", f'const apiKey = "{S}";\n', "string", "apiKey"),
    ("javascript", f'module.exports = {{ secret: "{S}" }};\n', "string", "secret"),
    ("javascript", f"let url = `https://x/{S}`;\n", "string", "url"),
    ("typescript", f'const token: string = "{S}";\n', "string", "token"),
    ("tsx", f'const key = "{S}";\n', "string", "key"),
    ("java", f'class A {{ String password = "{S}"; }}\n', "string", "password"),
    ("java", f'class A {{ void f() {{ setPassword("{S}"); }} }}\n', "string", "setPassword"),
    ("go", f'package main\nvar token = "{S}"\n', "string", "token"),
    ("go", f'package main\nfunc f() {{ secret := "{S}" }}\n', "string", "secret"),
    ("ruby", f'password = "{S}"\n', "string", "password"),
    ("ruby", f'cfg = {{ api_key: "{S}" }}\n', "string", "api_key"),
    ("php", f'<?php\n$password = "{S}";\n', "string", "$password"),
    ("php", f"<?php\n$a = ['token' => '{S}'];\n", "string", "token"),
    ("c", f'const char *password = "{S}";\n', "string", "*password"),
    ("c", f'#define API_KEY "{S}"\n', "other", "API_KEY"),  # a macro body is raw text
    ("cpp", f'std::string secret = "{S}";\n', "string", "secret"),
    ("bash", f'export API_TOKEN="{S}"\n', "string", "API_TOKEN"),
    ("bash", f"# {S}\n", "comment", None),
    ("yaml", f"db:\n  password: {S}\n", "config_value", "password"),
    ("yaml", f"# password: {S}\n", "comment", None),
    ("json", f'{{"auth": {{"token": "{S}"}}}}\n', "config_value", "token"),
    ("toml", f'[db]\npassword = "{S}"\n', "config_value", "password"),
    ("ini", f"[db]\npassword: {S}\n", "config_value", "password"),
    ("dotenv", f"export DB_PASSWORD={S}\n", "config_value", "DB_PASSWORD"),
    ("dotenv", f"# DB_PASSWORD={S}\n", "comment", None),
    (None, f"the key is {S}\n", "other", None),
    (None, f"token: {S}\n", "other", "token"),
]


@pytest.mark.parametrize(("language", "text", "kind", "name"), CASES)
def test_role(language: str | None, text: str, kind: str, name: str | None) -> None:
    start = text.index(S)
    context = SourceContext(text, language).at(start, start + len(S)).context
    assert (context.kind, context.name) == (kind, name)


def test_every_grammar_loads() -> None:
    for language in GRAMMARS:
        assert parser_for(language) is not None, language
    assert parser_for("cobol") is None


def test_character_offsets_with_non_ascii_text() -> None:
    """tree-sitter counts UTF-8 bytes; spans after multi-byte characters still resolve."""
    text = f'# Grüße, 日本語 ✓\ngreeting = "héllo"\npassword = "{S}"\n'
    start = text.index(S)
    role = SourceContext(text, "python").at(start, start + len(S))
    assert (role.context.kind, role.context.name) == ("string", "password")
    assert role.name_span is not None
    assert text[role.name_span[0] : role.name_span[1]] == "password"


def test_name_span_points_at_the_name() -> None:
    text = f'cfg = {{"api_key": "{S}"}}\n'
    start = text.index(S)
    role = SourceContext(text, "python").at(start, start + len(S))
    assert role.name_span is not None
    assert text[role.name_span[0] : role.name_span[1]] == '"api_key"'


def test_prefix_parse_gives_the_same_roles_as_a_full_parse() -> None:
    """A file is parsed only up to the top-level line after the last span when it can be."""
    head = f'"""Module docstring, {S}."""\nimport os\n\nPASSWORD = "{S}2"\n'
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200))
    text = head + body
    last = text.index(f"{S}2")
    partial = SourceContext(text, "python", upto=last + len(S) + 1)
    full = SourceContext(text, "python")
    for start, end in ((text.index(S), text.index(S) + len(S)), (last, last + len(S) + 1)):
        assert partial.at(start, end) == full.at(start, end)
    assert partial._tree is not None
    assert partial._tree.root_node.end_byte < len(text) // 2  # only the prefix was parsed


def test_long_names_are_shortened() -> None:
    name = "x" * 200
    text = f'{name} = "{S}"\n'
    start = text.index(S)
    context = SourceContext(text, "python").at(start, start + len(S)).context
    assert context.name is not None
    assert len(context.name) == 80
    assert context.name.endswith("…")
