"""Command-line options defined once: made from the typed schemas, or shared by commands.

`options_from` turns the fields of a pydantic model into Click options: the name
(``--<policy key>`` with ``_`` as ``-``, or the field's ``flag``), the type and range
(from the field's type and its ge/gt/le/lt bounds), the default and the help text all
come from the field, so the policy and the command line cannot drift apart. The
options that several commands share (the model, the data and how to read it, the
thresholds, the prefix length, the held-out code, the scan workers) are defined here
once. Nothing here imports torch.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import click
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from audit.corpus import CorpusSpec
from audit.hub import Source, dataset_source, model_source
from gate import ui
from gate.policy import ExtractionOptions, ScanOptions

F = TypeVar("F", bound=Callable[..., Any])


def stack(*options: Callable[[Any], Any]) -> Callable[[F], F]:
    """One decorator applying `options` in the order given (the order of --help)."""

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# ---------------------------------------------------------------- from a schema


def options_from(
    model: type[BaseModel],
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    dest: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Click options for the fields of `model` (`only` these, in their order), each
    passed to the command under its field name (or `dest`'s name for it)."""
    fields = model.model_fields
    names = list(only) if only is not None else [n for n in fields if n not in set(exclude)]
    renames = dest or {}
    return stack(*(option_for(fields[n], n, renames.get(n, n)) for n in names))


def flag_of(info: FieldInfo, name: str) -> str:
    """The option of a field: its own flag, else ``--<policy key>``."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    flag = extra.get("flag")
    if isinstance(flag, str):
        return flag
    return "--" + (info.serialization_alias or info.alias or name).replace("_", "-")


def option_for(info: FieldInfo, field: str, name: str) -> Callable[[Any], Any]:
    """One Click option made from one field (see the module's docstring), passed to the
    command as `name`."""
    flag = flag_of(info, field)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    kind = _without_none(info.annotation)
    common: dict[str, Any] = {"help": info.description}
    if kind is bool:
        if info.default:
            return click.option(f"{flag}/--no-{flag[2:]}", name, default=True, **common)
        return click.option(flag, name, is_flag=True, **common)
    if get_origin(kind) is tuple:
        return click.option(flag, name, multiple=True, metavar=extra.get("metavar"), **common)
    default = None if info.is_required() else info.default
    if extra.get("metavar"):
        common["metavar"] = extra["metavar"]
    return click.option(
        flag, name, type=_click_type(kind, info), default=default, show_default=True, **common
    )


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


class NumberOrWord(click.ParamType):  # type: ignore[type-arg]
    """A positive number or one of some words (``--lr 1e-4`` or ``--lr auto``)."""

    name = "number-or-word"

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str) or value in self.words:
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number nor one of: {', '.join(self.words)}", param, ctx)
        if not number > 0:
            self.fail(f"{value!r} must be > 0", param, ctx)
        return number


def _words(kind: Any) -> tuple[str, ...]:
    """The words of a `float | Literal[...]` annotation (empty for any other)."""
    if get_origin(kind) not in (Union, types.UnionType):
        return ()
    parts = get_args(kind)
    literals = [get_args(a) for a in parts if get_origin(a) is Literal]
    return tuple(str(w) for words in literals for w in words) if len(literals) < len(parts) else ()


def _click_type(kind: Any, info: FieldInfo) -> Any:
    if _words(kind):
        return NumberOrWord(_words(kind))
    if get_origin(kind) is Literal:
        return click.Choice([str(v) for v in get_args(kind)])
    if kind in (int, float):
        return _range(kind, info)
    return kind


def _range(kind: type, info: FieldInfo) -> click.IntRange | click.FloatRange | Any:
    bounds: dict[str, Any] = {}
    for mark in info.metadata:
        if isinstance(mark, annotated_types.Ge | annotated_types.Gt):
            bounds["min"] = mark.ge if isinstance(mark, annotated_types.Ge) else mark.gt
            bounds["min_open"] = isinstance(mark, annotated_types.Gt)
        elif isinstance(mark, annotated_types.Le | annotated_types.Lt):
            bounds["max"] = mark.le if isinstance(mark, annotated_types.Le) else mark.lt
            bounds["max_open"] = isinstance(mark, annotated_types.Lt)
    if not bounds:
        return click.INT if kind is int else click.FLOAT
    if kind is int:  # an integer range is closed: an open bound moves by one
        low, high = bounds.get("min"), bounds.get("max")
        low = low + 1 if low is not None and bounds.get("min_open") else low
        high = high - 1 if high is not None and bounds.get("max_open") else high
        return click.IntRange(min=low, max=high)
    return click.FloatRange(**bounds)


def as_arguments(values: BaseModel) -> list[str]:
    """The command-line options that set every field of `values` (`options_from`'s)."""
    out: list[str] = []
    for name, info in type(values).model_fields.items():
        flag, value = flag_of(info, name), getattr(values, name)
        if isinstance(value, bool):
            out += [flag] if value else ([f"--no-{flag[2:]}"] if info.default else [])
        elif isinstance(value, tuple):
            out += [f"{flag}={item}" for item in value]
        elif value is not None:
            out.append(f"{flag}={value}")
    return out


def values_of(model: type[BaseModel], options: dict[str, Any]) -> dict[str, Any]:
    """The command's option values that are fields of `model`."""
    return {name: value for name, value in options.items() if name in model.model_fields}


# ---------------------------------------------------------------- shared options


class ModelRun(BaseModel):
    """How the model runs (the options of every command that loads one)."""

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where to run the model (auto: cuda, then mps, then cpu)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype (auto: bfloat16 on a GPU, float32 on CPU)."
    )
    batch_tokens: int = Field(
        16384,
        ge=1,
        description="Padded tokens per batch; bounds memory (raise it on a large GPU).",
    )


def model_options(command: F) -> F:
    """--model, --device, --dtype and --batch-tokens: the model and how it runs."""
    path = click.option(
        "--model",
        "model",
        required=True,
        metavar="PATH|ORG/NAME[@REV]",
        help="The model to audit: a folder (save_pretrained: config, safetensors, "
        "tokenizer), a .gguf file, or a Hugging Face Hub id ORG/NAME[@REVISION] (its "
        "safetensors, config and tokenizer are fetched into the Hub cache; a local path "
        "of the same spelling wins). It is only read.",
    )
    return stack(path, options_from(ModelRun))(command)


hub_data_options = stack(
    click.option(
        "--data-config",
        "data_config",
        metavar="NAME",
        help="A Hub dataset's configuration (subset), when it has several.",
    ),
    click.option(
        "--data-split",
        "data_split",
        metavar="NAME",
        help="A Hub dataset's split to read [default: train].",
    ),
)
"""--data-config and --data-split: which part of a Hub dataset --data names."""


def data_of(given: str, config: str | None = None, split: str | None = None) -> Source:
    """The data as given: a local path, or a Hub dataset id resolved to a commit."""
    return dataset_source(given, config, split)


def announce(*sources: Source) -> None:
    """Say (on stderr) which commit each Hub model or dataset resolved to."""
    for source in sources:
        hub = source.hub
        if hub is not None and not ui.is_quiet():
            name = hub.part if hub.repo_type == "dataset" else source.given
            ui.console.print(
                f"Hub {hub.repo_type} {ui.safe(name)}: commit {hub.commit}", soft_wrap=True
            )


def model_of(given: str) -> Source:
    """The model as given: a local path, or a Hub id fetched (or found in the cache)."""
    return model_source(given)


_FORMAT_FIELDS = ("format", "text_field", "id_field")


def data_format_options(command: F) -> F:
    """--format, --text-field and --id-field: how the data is read (the policy's scan
    section), passed on as `fmt`, `text_field` and `id_field`."""
    return options_from(ScanOptions, only=_FORMAT_FIELDS, dest={"format": "fmt"})(command)


DATA_HELP = (
    " A Hugging Face Hub dataset id (hf://datasets/ORG/NAME[@REVISION], or ORG/NAME[@REVISION] "
    "when no such local path exists) is streamed; see --data-config and --data-split."
)


def corpus_options(data_option: str, data_help: str, hub: bool = True) -> Callable[[F], F]:
    """The data (as `data`: a path, or with `hub` a Hub dataset id too, with its
    --data-config and --data-split) and how to read it (as in `codeeraser scan`)."""
    if not hub:
        path = click.option(
            data_option, "data", required=True, type=click.Path(path_type=Path), help=data_help
        )
        return stack(path, data_format_options)
    given = click.option(
        data_option, "data", required=True, metavar="PATH|ID", help=data_help + DATA_HELP
    )
    return stack(given, hub_data_options, data_format_options)


def corpus_spec(data: Path | Source, fmt: str, text_field: str, id_field: str) -> CorpusSpec:
    """How to read `data` (a path, or a resolved `Source`) under the data format options."""
    options = ScanOptions.model_validate(
        {"format": fmt, "text_field": text_field, "id_field": id_field}
    )
    if isinstance(data, Source):
        return options.corpus_spec(data.path, hub=data.hub)
    return options.corpus_spec(data)


findings_option = click.option(
    "--findings",
    "findings_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Findings file written by `codeeraser scan` on the same data.",
)

thresholds_option = click.option(
    "--thresholds",
    "thresholds_spec",
    metavar="FILE|paper:MODEL",
    help="Forgetting thresholds: a file from `codeeraser calibrate`, or the paper's values "
    "for a model (paper:codeparrot-small, paper:codegen-350m-mono, paper:codegen-2b-mono, "
    "paper:qwen2.5-coder-7b); after measure, give erase the ones the measurements were "
    "made against. Default: paper:codeparrot-small.",
)

prefix_tokens_option = options_from(ExtractionOptions, only=("prefix_tokens",))

heldout_option = click.option(
    "--heldout",
    "heldout",
    type=click.Path(path_type=Path),
    help="Held-out code (folder or JSONL) whose perplexity is measured before and after "
    "erasing. In `gate` it overrides the policy's utility.heldout (default: the unseen code).",
)

jobs_option = click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    envvar="CODEERASER_JOBS",
    help="Scan worker processes (0: every core). Results do not depend on it.",
)
