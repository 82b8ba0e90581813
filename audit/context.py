"""The syntactic role of a span: string, comment, docstring or config value, and its name.

Code files are parsed with tree-sitter (one grammar wheel per language, loaded on
first use); config formats (YAML, JSON, TOML, INI, .env) and unknown files use simple
line rules. `SourceContext(text, language).at(start, end)` answers for one span; the
text is parsed at most once, and only when a span in it is asked about.

tree-sitter works in UTF-8 byte offsets; findings use character offsets. Pure-ASCII
texts (most code) need no conversion; others are converted per call.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from tree_sitter import Language, Parser

from audit.filters import words
from audit.findings import Context

# language -> (grammar module, function returning the language pointer)
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "java": ("tree_sitter_java", "language"),
    "go": ("tree_sitter_go", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "bash": ("tree_sitter_bash", "language"),
}
CONFIG_FORMATS = frozenset({"yaml", "json", "toml", "ini", "dotenv"})

_STRING_TYPES = words(
    """string string_literal raw_string_literal interpreted_string_literal template_string
    encapsed_string raw_string heredoc_body heredoc_content string_content
    string_fragment char_literal character_literal concatenated_string"""
)
_COMMENT_TYPES = frozenset({"comment", "line_comment", "block_comment"})
# An ancestor that names what it holds: node type -> field of the name (None: first child).
_OWNER_FIELDS: dict[str, str | None] = {
    "assignment": "left",
    "augmented_assignment": "left",
    "keyword_argument": "name",
    "default_parameter": "name",
    "typed_default_parameter": "name",
    "pair": "key",
    "variable_declarator": "name",
    "assignment_expression": "left",
    "augmented_assignment_expression": "left",
    "public_field_definition": "name",
    "field_definition": "property",
    "short_var_declaration": "left",
    "assignment_statement": "left",
    "var_spec": "name",
    "const_spec": "name",
    "keyed_element": None,
    "init_declarator": "declarator",
    "initializer_pair": "designator",
    "element_value_pair": "key",
    "array_element_initializer": None,
    "property_element": None,
    "const_element": None,
    "variable_assignment": "name",
    "preproc_def": "name",
    "call": "function",
    "call_expression": "function",
    "method_invocation": "name",
    "function_call_expression": "function",
    "member_call_expression": "name",
}
# Where the search for a name stops: past these, a name would belong to something else.
_STOP_TYPES = words(
    """module program block statement_block compound_statement class_body declaration_list
    function_definition method_declaration class_definition source_file translation_unit
    body_statement"""
)
_MAX_NAME = 80
_TOP_LEVEL = re.compile(r"\n(?=\S)")
_NAME_SEP = {"yaml": ":", "json": ":", "toml": "=", "ini": "=:", "dotenv": "="}
_KEY = re.compile(r"([\"']?)([A-Za-z_$@][\w.$@\-]*)\1\s*(?:[:=]|=>)\s*")


@cache
def parser_for(language: str) -> Any | None:
    """A tree-sitter parser for `language`, or None when no grammar is installed."""
    target = GRAMMARS.get(language)
    if target is None:
        return None
    try:
        module = importlib.import_module(target[0])
    except ImportError:
        return None
    return Parser(Language(getattr(module, target[1])()))


@dataclass(frozen=True)
class Role:
    """A span's context, plus where its name came from (to check the name is not a secret)."""

    context: Context
    name_span: tuple[int, int] | None = None  # character span of the name in the text


class SourceContext:
    """Answers `at(start, end)` for spans of one text; parses it at most once."""

    def __init__(self, text: str, language: str | None, upto: int | None = None) -> None:
        self.text = text
        self.language = language
        self.upto = upto  # no span asked about ends after this: a prefix may be enough
        self._tree: Any | None = None
        self._parsed = False
        self._ascii = text.isascii()
        self._encoded: bytes | None = None

    def at(self, start: int, end: int) -> Role:
        """The role of `text[start:end]`."""
        tree = self._parse()
        if tree is not None:
            return self._tree_role(tree, start, end)
        return _line_role(self.text, start, end, self.language)

    def _parse(self) -> Any | None:
        if not self._parsed:
            self._parsed = True
            parser = parser_for(self.language) if self.language else None
            if parser is not None:
                self._tree = self._parse_prefix(parser) or parser.parse(self._bytes())
        return self._tree

    def _parse_prefix(self, parser: Any) -> Any | None:
        """Parse only up to the top-level line after `upto`, if that parses cleanly.

        Most files with findings have them near the top (licence headers, settings);
        a prefix that ends before a column-0 line and parses without errors has the
        same tree for the spans in it as the whole file.
        """
        if self.upto is None or self.language == "java" or self.upto > len(self.text) // 2:
            return None
        match = _TOP_LEVEL.search(self.text, self.upto)
        if match is None or match.end() > len(self.text) // 2:
            return None
        tree = parser.parse(self._bytes()[: self._to_byte(match.end())])
        return None if tree.root_node.has_error else tree

    def _bytes(self) -> bytes:
        if self._encoded is None:
            self._encoded = self.text.encode("utf-8", errors="surrogatepass")
        return self._encoded

    def _to_byte(self, index: int) -> int:
        if self._ascii:
            return index
        return len(self.text[:index].encode("utf-8", errors="surrogatepass"))

    def _to_char(self, offset: int) -> int:
        if self._ascii:
            return offset
        return len(self._bytes()[:offset].decode("utf-8", errors="replace"))

    def _tree_role(self, tree: Any, start: int, end: int) -> Role:
        node = tree.root_node.descendant_for_byte_range(self._to_byte(start), self._to_byte(end))
        kind, inner = _kind_of(node)
        if kind == "comment":
            return Role(Context(kind="comment", node=inner.type))
        if kind == "string" and _is_docstring(inner, self.language):
            return Role(Context(kind="docstring", node=inner.type))
        owner, name_node = _owner_of(inner)
        if name_node is None:
            return Role(Context(kind=kind, node=inner.type))
        name_span = (self._to_char(name_node.start_byte), self._to_char(name_node.end_byte))
        name = _clean_name(self.text[name_span[0] : name_span[1]])
        return Role(Context(kind=kind, name=name, node=owner.type), name_span)


def _kind_of(node: Any) -> tuple[str, Any]:
    """('string' | 'comment' | 'other', the outermost string or the comment node)."""
    found: tuple[str, Any] = ("other", node)
    current = node
    for _ in range(8):
        if current is None:
            break
        if current.type in _COMMENT_TYPES:
            return "comment", current
        if current.type in _STRING_TYPES:
            found = ("string", current)
        elif found[0] == "string":
            break
        current = current.parent
    return found


def _is_docstring(string: Any, language: str | None) -> bool:
    """A Python string that is the first statement of a module, class or function."""
    if language != "python":
        return False
    statement = string.parent
    if statement is None or statement.type != "expression_statement":
        return False
    body = statement.parent
    if body is None or body.type not in ("module", "block"):
        return False
    first = next((c for c in body.named_children if c.type != "comment"), None)
    return first is not None and first.id == statement.id


def _owner_of(node: Any) -> tuple[Any, Any | None]:
    """The nearest ancestor that names `node` (an assignment, a pair, a call...)."""
    child, current = node, node.parent
    for _ in range(6):
        if current is None or current.type in _STOP_TYPES:
            break
        if current.type in _OWNER_FIELDS:
            name_node = _name_child(current, _OWNER_FIELDS[current.type])
            if name_node is not None and not _contains(name_node, child):
                return current, name_node
        child, current = current, current.parent
    return node, None


def _name_child(owner: Any, field_name: str | None) -> Any | None:
    if field_name is not None:
        return owner.child_by_field_name(field_name)
    named = owner.named_children
    return named[0] if len(named) >= 2 else None


def _contains(outer: Any, inner: Any) -> bool:
    return bool(outer.start_byte <= inner.start_byte and inner.end_byte <= outer.end_byte)


def _clean_name(raw: str) -> str:
    name = " ".join(raw.encode("utf-8", errors="replace").decode("utf-8").split())
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'`":
        name = name[1:-1]
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


def _line_role(text: str, start: int, end: int, language: str | None) -> Role:
    """Config formats and unknown files: the key before the span on its own line."""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start]
    stripped = before.lstrip()
    node = language if language in CONFIG_FORMATS else None
    if stripped.startswith(("#", ";", "//")) or (" #" in before and language != "json"):
        return Role(Context(kind="comment", node=node))
    matches = [m for m in _KEY.finditer(before) if _separator_ok(m.group(0), language)]
    if not matches:
        return Role(Context(kind="config_value" if node else "other", node=node))
    key = matches[-1]
    name_span = (line_start + key.start(2), line_start + key.end(2))
    kind = "config_value" if node else "other"
    return Role(Context(kind=kind, name=_clean_name(key.group(2)), node=node), name_span)


def _separator_ok(assignment: str, language: str | None) -> bool:
    allowed = _NAME_SEP.get(language or "", ":=")
    return any(sep in assignment for sep in allowed)
