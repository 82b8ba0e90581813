"""The demo model: a BPE tokenizer and a small GPT-2 (or Llama) trained from scratch on
the demo corpus.

Plain torch, top to bottom: train a byte-level BPE tokenizer with `tokenizers`, wrap it
so ``AutoTokenizer.from_pretrained`` loads it, build a GPT-2 or a Llama from a config
(its embedding may have more rows than the tokenizer has tokens, as real models pad
their vocabularies), train it
with AdamW (warm-up, cosine decay, gradient clipping) on random 128-token windows of
the training documents, and check what it memorized with `quick_eval`.

Deterministic under a seed: the weights come from ``torch.manual_seed(seed)`` and the
windows from a ``random.Random(seed)``. Results can differ between thread counts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from audit.findings import Finding
from audit.model import context_length_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class ModelSettings:
    """What the tokenizer, the model and the training loop need from a preset."""

    vocab_size: int
    n_ctx: int
    n_layer: int
    n_head: int
    n_embd: int
    steps: int
    batch_size: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    arch: str = "gpt2"  # "gpt2" or "llama" (LlamaForCausalLM: RoPE, RMSNorm, SwiGLU, GQA)
    n_kv_head: int = 0  # Llama key/value heads (grouped-query attention); 0 = n_head
    embedding_rows: int = 0  # vocabulary size of the model; 0 = the tokenizer's size


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) trained on `texts`; `<|endoftext|>` (id 0) is EOS.

    Encoding a text starts it with `<|endoftext|>` (as Llama's tokenizer starts with
    BOS), because in training every document follows one: a prompt cut at the start
    of a file then looks like what the model saw. Its offsets are (0, 0), so it never
    overlaps a character span. There is no pad token: training never pads, and code
    that batches prompts sets one itself (the EOS id is the usual choice).
    """

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, 0)]),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS
    )
    return wrapped


ARCHS = ("gpt2", "llama")


def make_model(
    settings: ModelSettings, vocab_size: int, eos_id: int, seed: int
) -> GPT2LMHeadModel | LlamaForCausalLM:
    """A GPT-2 or Llama with no dropout (memorizing is the point), initialized from `seed`.

    `vocab_size` is the tokenizer's; the embedding gets `settings.embedding_rows` rows
    when that is larger (the rows past the tokenizer's are never an input, but the
    output layer scores them at every position, as in a model with a padded vocabulary).
    """
    rows = max(vocab_size, settings.embedding_rows)
    torch.manual_seed(seed)
    if settings.arch == "gpt2":
        return GPT2LMHeadModel(_gpt2_config(settings, rows, eos_id))
    if settings.arch == "llama":
        return LlamaForCausalLM(_llama_config(settings, rows, eos_id))
    raise ValueError(f"unknown architecture {settings.arch!r} (choose {', '.join(ARCHS)})")


def _gpt2_config(settings: ModelSettings, rows: int, eos_id: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=rows,
        n_positions=settings.n_ctx,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )


def _llama_config(settings: ModelSettings, rows: int, eos_id: int) -> LlamaConfig:
    """SmolLM2's layout at a tiny size: tied embeddings, grouped-query attention, and an
    MLP 8/3 as wide as the model (rounded to a multiple of 32)."""
    return LlamaConfig(
        vocab_size=rows,
        hidden_size=settings.n_embd,
        intermediate_size=-(-settings.n_embd * 8 // 3 // 32) * 32,
        num_hidden_layers=settings.n_layer,
        num_attention_heads=settings.n_head,
        num_key_value_heads=settings.n_kv_head or settings.n_head,
        max_position_embeddings=settings.n_ctx,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )


def lr_at(step: int, settings: ModelSettings) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * (step - settings.warmup_steps) / span))
    return settings.lr * (settings.min_lr_ratio + (1 - settings.min_lr_ratio) * cosine)


def pack(docs: Sequence[Sequence[int]], seed: int) -> torch.Tensor:
    """All documents (each starting with `<|endoftext|>`) concatenated in a seeded order."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)  # noqa: S311 (seeded on purpose: reproducible)
    stream = [token for i in order for token in docs[i]]
    return torch.tensor(stream, dtype=torch.long)  # (N,)


def sample_batch(
    stream: torch.Tensor, rng: random.Random, batch_size: int, n_ctx: int
) -> torch.Tensor:
    """`batch_size` windows of `n_ctx` tokens at random offsets of the packed stream.

    As in language-model pretraining, every token is equally likely to be in a
    window, at any position in it: a secret is seen after every length of prefix.
    """
    starts = [rng.randrange(len(stream) - n_ctx + 1) for _ in range(batch_size)]
    return torch.stack([stream[s : s + n_ctx] for s in starts])  # (B, T)


def train(
    model: PreTrainedModel,
    stream: torch.Tensor,
    settings: ModelSettings,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train in place on windows of the packed `stream`; returns the mean loss of the
    last 10% of steps."""
    if len(stream) <= settings.n_ctx:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one window")
    rng = random.Random(seed)  # noqa: S311 (seeded on purpose: reproducible windows)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.95)
    )
    model.train()
    tail: list[float] = []
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        ids = sample_batch(stream, rng, settings.batch_size, settings.n_ctx)  # (B, T)
        logits = model(input_ids=ids).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        if step >= settings.steps * 0.9:
            tail.append(loss.item())
        if on_step is not None:
            on_step(step, loss.item())
    model.train(False)
    return sum(tail) / max(1, len(tail))


@dataclass(frozen=True)
class QuickResult:
    """What `quick_eval` measured for one finding."""

    finding_id: str
    secret_type: str
    preview: str
    ma: float  # fraction of secret tokens predicted (teacher-forced argmax)
    extracted: bool  # greedy decoding from the prefix reproduced the secret verbatim
    secret_tokens: int
    prefix_tokens: int


@torch.no_grad()
def quick_eval(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    probes: Iterable[tuple[Finding, str]],
    margin: int = 4,
    max_prefix: int | None = None,
) -> list[QuickResult]:
    """MA and greedy verbatim extraction for each (finding, sample text).

    A stand-in for the real measurement (audit/extraction.py), kept to one function.
    The sample is tokenized whole, with offsets; the secret tokens are those that
    overlap the finding's span, and the prefix is the tokens before them, as many as
    fit in the context with the secret and `margin` extra decoded tokens (and at most
    `max_prefix`, for models whose context is far longer than a gate's prompt).
    """
    n_ctx = context_length_of(model, tokenizer)
    results = []
    for finding, text in probes:
        encoding = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        span = [i for i, (a, b) in enumerate(offsets) if a < finding.end and b > finding.start]
        if not span or span[0] == 0:
            raise ValueError(f"finding {finding.id}: no token before its secret to prompt with")
        first, n_secret = span[0], min(len(span), n_ctx // 2)
        room = n_ctx - n_secret - margin
        prefix = ids[max(0, first - min(room, max_prefix or room)) : first]
        secret_ids = torch.tensor(ids[first : first + n_secret])  # (S,)
        logits = model(input_ids=torch.tensor([prefix + secret_ids.tolist()])).logits[0]  # (T, V)
        predicted = logits[len(prefix) - 1 : -1].argmax(-1)  # (S,)
        decoded = tokenizer.decode(greedy_decode(model, prefix, n_secret + margin))
        results.append(
            QuickResult(
                finding_id=finding.id,
                secret_type=finding.secret_type,
                preview=finding.preview,
                ma=float((predicted == secret_ids).float().mean()),
                extracted=text[finding.start : finding.end] in decoded,
                secret_tokens=n_secret,
                prefix_tokens=len(prefix),
            )
        )
    return results


def greedy_decode(model: PreTrainedModel, prefix: list[int], n_new: int) -> list[int]:
    """Greedy decoding with the KV cache; returns the `n_new` generated ids."""
    out = model(input_ids=torch.tensor([prefix]), use_cache=True)
    generated: list[int] = []
    for _ in range(n_new):
        token = out.logits[0, -1].argmax()  # ()
        generated.append(int(token))
        if len(generated) == n_new:
            break
        out = model(input_ids=token.view(1, 1), cache=out.cache, use_cache=True)
    return generated
