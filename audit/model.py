"""Load a causal language model and its tokenizer from a local folder, and run it.

`load_model` reads a folder written by ``save_pretrained`` (a ``config.json``, safetensors
weights and a fast tokenizer), or a GGUF file (transformers dequantizes it to plain
weights; the ``gguf`` package is the ``codeeraser[gguf]`` extra), and never downloads
anything or runs code from the folder (``trust_remote_code`` stays off). A folder that
is missing or is not a causal LM is an `InputError` (exit 2); a folder that looks right
but fails to load is a `ModelLoadError` (exit 3).

The helpers below it (`forward`, `pad_token_id`, `context_length_of`) work on any
in-memory causal LM, including one that is being trained, so that measuring code can
run on a model that never touched a folder.

The output layer, a chunk of positions at a time. A model's logits are V numbers per
position (V = 49,152 for SmolLM2, 151,936 for Qwen2.5): 16,384 positions of float32
logits take 3.2 GB at 49k and 10 GB at 152k. `forward_hidden` runs the model's own
forward with its output layer bypassed, so it returns the hidden states that layer
would read (after the final norm); `head_chunks` cuts positions into chunks whose
logits stay under `LOGIT_BUDGET` entries, and the callers apply the output layer
(`output_layer`) one chunk at a time, keeping only what they need of each chunk (an
argmax, a target's log-prob, a top-k). Whether a model's logits are exactly its output
layer applied to those hidden states is checked once per model on a two-token input
(`split_head`); a model that does more (logit soft-capping or scaling, a head that is
not one linear layer) takes the plain path: the hidden states are its logits, and the
"output layer" is the identity.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import json
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from audit.errors import InputError, ModelLoadError
from audit.integrity import check_loading_info

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

FALLBACK_CONTEXT = 2048  # used when neither the config nor the tokenizer names a context length
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
_NOT_CAUSAL = frozenset({"general", "tokenizer", "t5", "umt5"})  # GGUF sections, seq2seq
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length", "max_seq_len")


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer, and where and how it runs."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    context_length: int  # the most positions prefix + secret + decoded tokens may use
    path: Path

    @property
    def pad_id(self) -> int:
        return pad_token_id(self.tokenizer, self.model)


def load_model(path: Path | str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a causal LM and its tokenizer from a local folder or GGUF file, ready for
    measuring."""
    path = Path(path)
    model_type = check_model_dir(path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tokenizer = load_tokenizer(path)
    check_vocabulary(path, tokenizer, _config_vocab_size(path))
    where, source = _weights_source(path)

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # ours is on stderr
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # its load report: ours
    try:
        placement = {} if dev.type == "cpu" else {"device_map": str(dev)}  # load onto the GPU
        with _quiet_gguf(path):
            result: Any = AutoModelForCausalLM.from_pretrained(
                where,
                dtype=torch_dtype,
                trust_remote_code=False,
                output_loading_info=True,  # checked below: transformers only warns
                ignore_mismatched_sizes=True,  # so that a shape mismatch is named, not raised
                **source,
                **placement,
            )
        loaded, info = result
        model = cast("torch.nn.Module", loaded).to(dev)
    except Exception as exc:  # any failure of a valid-looking model: corrupt, OOM, ...
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{path}: the {model_type} model failed to load: {reason}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(path, model_type, info)
    check_vocabulary(path, tokenizer, _vocab_size(model))
    if is_gguf(path):
        plain_weights(model)
    model.eval()
    context = context_length_of(model, tokenizer)
    log.info("loaded %s (%s) on %s in %s, context %d", path, model_type, dev, torch_dtype, context)
    return LoadedModel(model, tokenizer, dev, torch_dtype, context, path)


def check_model_dir(path: Path) -> str:
    """Check that `path` holds a causal LM saved with safetensors (or is a GGUF file of
    one); return its model type."""
    if is_gguf(path):
        return check_gguf(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such model folder (give a folder written by save_pretrained)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(f"{path}: no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{config_file}: not a readable JSON model config") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        raise InputError(f"{config_file}: no model_type (not a Hugging Face model config)")
    architectures = config.get("architectures") or []
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        architectures and not causal.intersection(architectures)
    ):
        kind = ", ".join(architectures) or f"a {model_type!r} model"
        raise InputError(
            f"{path}: {kind} is not a causal language model "
            "(give a decoder-only model such as GPT-2, Llama, Qwen or StarCoder)"
        )
    if not any(path.glob("*.safetensors")):
        raise InputError(
            f"{path}: no *.safetensors weights (save the model with save_pretrained; "
            "pickled .bin weights are not loaded)"
        )
    check_vocabulary(path, load_tokenizer(path), _config_vocab_size(path))
    return model_type


def is_gguf(path: Path) -> bool:
    """A GGUF checkpoint file (by its name; `check_gguf` reads it)."""
    return path.suffix.lower() == ".gguf"


def check_gguf(path: Path) -> str:
    """Check that `path` is a GGUF file of an architecture transformers can dequantize,
    with a tokenizer in it; return the architecture."""
    fields = gguf_fields(path, ("general.architecture", "tokenizer.ggml.model"))
    architecture = fields.get("general.architecture")
    if not isinstance(architecture, str):
        raise InputError(f"{path}: no general.architecture in the GGUF file (not a model)")
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES or architecture in _NOT_CAUSAL:
        raise InputError(
            f"{path}: a GGUF {architecture!r} model, which transformers does not load as a "
            "causal language model (give a Llama, Qwen, Mistral, GPT-2, StarCoder2, ... GGUF)"
        )
    if not isinstance(fields.get("tokenizer.ggml.model"), str):
        raise InputError(f"{path}: the GGUF file holds no tokenizer (tokenizer.ggml.model)")
    return architecture


def gguf_fields(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Metadata values of a GGUF file (names absent from it are left out)."""
    try:
        import gguf
    except ImportError:
        raise InputError(
            f"{path}: reading a GGUF model needs the `gguf` package "
            "(pip install 'codeeraser[gguf]')"
        ) from None
    try:
        reader = gguf.GGUFReader(str(path))
        found = {name: reader.get_field(name) for name in names}
        return {name: f.contents() for name, f in found.items() if f is not None}
    except Exception as exc:  # gguf raises ValueError, struct and numpy errors on a bad file
        raise InputError(f"{path}: not a readable GGUF file ({type(exc).__name__})") from None


def _weights_source(path: Path) -> tuple[str, dict[str, Any]]:
    """What from_pretrained reads: a folder's safetensors, or a GGUF file (with the config
    keys transformers' GGUF mapping leaves out)."""
    if not is_gguf(path):
        return str(path), {"use_safetensors": True}
    extra: dict[str, Any] = {"gguf_file": path.name}
    if check_gguf(path) == "gpt2":  # the mapping sets n_ctx, which GPT2Config ignores
        context = gguf_fields(path, ("gpt2.context_length",)).get("gpt2.context_length")
        if isinstance(context, int):
            extra["n_positions"] = context
    return str(path.parent), extra


def save_gguf_tokenizer(path: Path, folder: Path) -> None:
    """Write the tokenizer a GGUF file holds into `folder` as tokenizer.json and its
    config (as the file describes it: no padding set up for measuring)."""
    tokenizer = AutoTokenizer.from_pretrained(
        str(path.parent), gguf_file=path.name, trust_remote_code=False
    )
    tokenizer.save_pretrained(str(folder))


def _quiet_gguf(path: Path) -> contextlib.AbstractContextManager[object]:
    """transformers converts a GGUF file's tensors under a plain tqdm bar, which its
    progress-bar switch does not reach: its stderr goes nowhere (ours is on stderr)."""
    if not is_gguf(path):
        return contextlib.nullcontext()
    return contextlib.redirect_stderr(io.StringIO())


def plain_weights(model: torch.nn.Module) -> None:
    """Forget that a model came from GGUF: its weights are dequantized, plain tensors,
    but transformers keeps a GGUF "quantizer" and ``quantization_config`` that make
    ``save_pretrained`` refuse it, and a saved folder keep the refusal (facts.md)."""
    if hasattr(model, "hf_quantizer"):
        setattr(model, "hf_quantizer", None)  # noqa: B010  # not a tensor or submodule
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "quantization_config"):
        del config.quantization_config


def check_vocabulary(path: Path, tokenizer: PreTrainedTokenizerBase, rows: int | None) -> None:
    """Refuse a tokenizer with more tokens than the model has embedding rows: it belongs
    to another model, and its ids would index past the embedding. (Fewer is normal:
    embeddings are often padded to a round size.)"""
    size = len(tokenizer)
    if rows is not None and size > rows:
        raise InputError(
            f"{path}: the tokenizer has {size} tokens but the model's embedding has {rows} "
            "rows: the tokenizer is from another model (save the model's own tokenizer "
            "in the folder)"
        )


def _config_vocab_size(path: Path) -> int | None:
    """`vocab_size` of the folder's config.json (or of its text config), if it says."""
    if is_gguf(path):
        return None  # checked against the loaded embedding
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    for section in (config, config.get("text_config")):
        if isinstance(section, dict) and isinstance(section.get("vocab_size"), int):
            return int(section["vocab_size"])
    return None


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The folder's (or GGUF file's) fast tokenizer, set up for left padding."""
    if is_gguf(path):
        return _checked_tokenizer(path, str(path.parent), gguf_file=path.name)
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise InputError(
            f"{path}: no tokenizer files (tokenizer.json); save one with tokenizer.save_pretrained"
        )
    return _checked_tokenizer(path, str(path))


def _checked_tokenizer(path: Path, where: str, **extra: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **extra)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path}: no usable tokenizer ({type(exc).__name__}; save one with "
            "tokenizer.save_pretrained)"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            f"{path}: the tokenizer is not a fast tokenizer (tokenizer.json); "
            "measuring needs character offsets"
        )
    prepare_tokenizer(tokenizer)
    return tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Left padding, and a pad token that is a real token of the vocabulary.

    A tokenizer without a pad token gets its EOS (else BOS, else UNK) token as pad:
    padded positions are masked out, so which real token fills them does not matter,
    while adding a new token would need an embedding the model does not have.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        for name in ("eos_token", "bos_token", "unk_token"):
            token = getattr(tokenizer, name, None)
            if token is not None:
                tokenizer.pad_token = token
                break


def pad_token_id(tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module | None = None) -> int:
    """A token id to fill padded (masked) positions with; always inside the embedding."""
    vocab = _vocab_size(model)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and value >= 0 and (vocab is None or value < vocab):
            return value
    return 0


def start_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token a document starts with: BOS, else EOS (GPT-2 style), else 0."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and value >= 0:
            return value
    return 0


def _vocab_size(model: torch.nn.Module | None) -> int | None:
    embeddings = getattr(model, "get_input_embeddings", None)
    if embeddings is None:
        return None
    layer = embeddings()
    size = getattr(layer, "num_embeddings", None)
    return size if isinstance(size, int) else None


def context_length_of(model: torch.nn.Module, tokenizer: Any = None) -> int:
    """The most positions the model takes: from its config, else the tokenizer, else 2048."""
    config = getattr(model, "config", None)
    text_config = getattr(config, "get_text_config", None)
    if callable(text_config):
        config = text_config(decoder=True)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    return FALLBACK_CONTEXT


def resolve_device(device: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; a forced device that is absent is an InputError."""

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r} (use one of {', '.join(DEVICES)})")
    has_mps = torch.backends.mps.is_available()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    elif (device == "cuda" and not torch.cuda.is_available()) or (device == "mps" and not has_mps):
        raise InputError(f"device {device!r} is not available on this machine (use --device cpu)")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bf16 on a GPU and fp32 on CPU for "auto" (fp16 on a GPU without bf16)."""

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (use one of {', '.join(DTYPES)})")
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.bfloat16
    return torch.float32


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (its input embeddings live there)."""

    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _forward_params(model: Any) -> set[str]:
    """The keyword names a model's forward accepts (through PEFT-style wrappers)."""
    names = set(inspect.signature(model.forward).parameters)
    base = getattr(model, "get_base_model", None)
    if not names & {"cache", "past_key_values"} and callable(base):
        names |= _forward_params(base())
    return names


def forward(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None,
    *,
    cache: Any = None,
    keep: int = 0,
) -> torch.Tensor:
    """Logits of the last `keep` positions (all if 0), optionally extending a KV cache.

    transformers 5.24 names the cache argument ``cache`` (``past_key_values`` is
    deprecated); older 5.x releases only know ``past_key_values``. The cache is updated
    in place, so the caller keeps its own reference.
    """
    params = _forward_params(model)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None:
        kwargs["cache" if "cache" in params else "past_key_values"] = cache
        kwargs["use_cache"] = True
    else:
        kwargs["use_cache"] = False
    if keep and "logits_to_keep" in params:
        kwargs["logits_to_keep"] = keep
    logits: torch.Tensor = model(**kwargs).logits  # (B, T or keep, V)
    return logits[:, -keep:, :] if keep else logits


def new_cache(model: torch.nn.Module) -> Any:
    """An empty KV cache laid out for the model (sliding-window layers included)."""

    config = getattr(model, "config", None)
    return DynamicCache(config=config) if config is not None else DynamicCache()


# --- the output layer, a chunk of positions at a time ---------------------------------

LOGIT_BUDGET = 1 << 24  # logits per chunk of positions: 64 MiB in float32
Head = Callable[[torch.Tensor], torch.Tensor]  # hidden states (..., D) -> logits (..., V)
_SPLITS: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def head_chunks(positions: int, vocab: int, budget: int = 0) -> list[slice]:
    """`positions` cut into chunks of at most budget // vocab positions (at least one;
    budget 0: `LOGIT_BUDGET`, read when called), of near-equal sizes: a short last chunk
    would run through another matrix kernel than the others (on the CPU, a product of a
    few rows may round differently).
    No positions: one empty chunk, so that callers always get a (possibly empty) result."""
    if positions <= 0:
        return [slice(0, 0)]
    most = max(1, (budget or LOGIT_BUDGET) // max(1, vocab))
    count = -(-positions // most)
    size, longer = divmod(positions, count)  # the first `longer` chunks take one more
    bounds = [i * size + min(i, longer) for i in range(count + 1)]
    return [slice(start, stop) for start, stop in itertools.pairwise(bounds)]


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    inner = getattr(model, "module", None)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) and inner is not None:
        return unwrapped(inner)
    return model


def output_layer(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's output layer when it is one linear layer, else None."""
    get = getattr(unwrapped(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Linear) else None


def split_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The output layer, if the model's logits are exactly that layer applied to the
    hidden states its forward hands it (checked once per model, on two tokens);
    None for a model whose logits are more than that."""
    head = output_layer(model)
    if head is None:
        return None
    if head not in _SPLITS:
        _SPLITS[head] = _head_is_split(unwrapped(model), head)
        if not _SPLITS[head]:
            log.info("%s: logits are not its output layer alone: full logits", type(model))
    return head if _SPLITS[head] else None


def _head_is_split(model: torch.nn.Module, head: torch.nn.Linear) -> bool:
    vocab = int(head.out_features)  # two ordinary tokens: a padding token's zero
    ids = torch.tensor([[vocab // 3, vocab // 2 + 1]], device=head.weight.device)  # embedding
    ids = ids % vocab  # would hide a logit soft-cap (tanh(0) = 0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits
            with bypassed(head):
                hidden = model(input_ids=ids, use_cache=False).logits
            return bool(torch.equal(head(hidden), logits))
    except (RuntimeError, TypeError, ValueError):  # a head that needs more than its input
        return False
    finally:
        model.train(was_training)


@contextlib.contextmanager
def bypassed(head: torch.nn.Module) -> Iterator[None]:
    """Within this block, in this thread, the output layer returns its input: the
    model's forward then returns the hidden states it would have turned into logits.
    Other threads using the same model meanwhile (ranks run as threads) get logits."""
    _enter(head)
    _bypassing().add(id(head))
    try:
        yield
    finally:
        _bypassing().discard(id(head))
        _leave(head)


_SWITCH_LOCK = threading.Lock()
_SWITCHED: dict[int, tuple[Any, int]] = {}  # id(head) -> (its own instance forward, users)
_LOCAL = threading.local()


def _bypassing() -> set[int]:
    """The heads bypassed in this thread."""
    heads: set[int] | None = getattr(_LOCAL, "heads", None)
    if heads is None:
        heads = _LOCAL.heads = set()
    return heads


def _enter(head: torch.nn.Module) -> None:
    """Put the switch in place of the head's forward (once, however many threads)."""
    with _SWITCH_LOCK:
        own, users = _SWITCHED.get(id(head), (head.__dict__.get("forward"), 0))
        if users == 0:
            head.forward = _Switch(head, own)
        _SWITCHED[id(head)] = (own, users + 1)


def _leave(head: torch.nn.Module) -> None:
    """The last user out puts the head's own forward back (a hook's instance forward too)."""
    with _SWITCH_LOCK:
        own, users = _SWITCHED[id(head)]
        if users > 1:
            _SWITCHED[id(head)] = (own, users - 1)
            return
        del _SWITCHED[id(head)]
        if own is None:
            del head.forward
        else:
            head.forward = own


class _Switch:
    """A head's forward: the identity in a thread that bypasses it, else its own."""

    def __init__(self, head: torch.nn.Module, own: Any) -> None:
        self.head, self.own = head, own

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if id(self.head) in _bypassing():
            return hidden
        if self.own is not None:
            out: torch.Tensor = self.own(hidden)
            return out
        return cast(torch.Tensor, type(self.head).forward(self.head, hidden))


def _identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def forward_hidden(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    *,
    cache: Any = None,
    keep: int = 0,
    split: bool = True,
) -> tuple[torch.Tensor, Head]:
    """The hidden states of the last `keep` positions (all if 0) as the output layer
    would read them, and that layer; for a model whose head cannot be split (or with
    `split` off), the logits and the identity (`forward`'s arguments; without position
    ids the model's own)."""
    head = split_head(model) if split else None
    if head is None:
        return forward(model, input_ids, attention_mask, position_ids, cache=cache, keep=keep), (
            _identity
        )
    with bypassed(head):
        hidden = forward(model, input_ids, attention_mask, position_ids, cache=cache, keep=keep)
    return hidden, head


def vocab_of(model: torch.nn.Module) -> int:
    """Logits per position: the output layer's rows (the config's vocab_size if unknown)."""
    head = output_layer(model)
    if head is not None:
        return int(head.out_features)
    config = getattr(unwrapped(model), "config", None)
    text = getattr(config, "get_text_config", None)
    config = text(decoder=True) if callable(text) else config
    return int(getattr(config, "vocab_size", 0) or 1)


def chunked_argmax(head: Head, hidden: torch.Tensor, vocab: int, budget: int = 0) -> torch.Tensor:
    """argmax of the logits at each position of `hidden` (N, D) -> (N,), a chunk of
    positions at a time (the same values as the argmax of the whole (N, V) logits)."""
    chunks = head_chunks(len(hidden), vocab, budget)
    return torch.cat([head(hidden[rows]).argmax(dim=-1) for rows in chunks])


def chunked_nll(
    head: Head, hidden: torch.Tensor, labels: torch.Tensor, vocab: int, budget: int = 0
) -> torch.Tensor:
    """−log p(label) at each position of `hidden` (N, D), labels (N,) -> (N,) float32,
    from the logits of a chunk of positions at a time (no gradient)."""
    parts = [
        F.cross_entropy(head(hidden[rows]).float(), labels[rows], reduction="none")
        for rows in head_chunks(len(hidden), vocab, budget)
    ]
    return torch.cat(parts)
