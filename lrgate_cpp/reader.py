"""Rows of one layer at the last prompt token, read straight from the model.

Where :mod:`lrgate_cpp.extract` stores activations of many layers on disk,
this module returns one layer's rows in memory: for calibrating a gate on a
few examples, for adapting baselines, and for benchmarks. Each forward pass
stops at the layer, and the chat template's prefix shared by the prompts is
decoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lrgate_cpp.extract import check_layers, pack_prompts
from lrgate_cpp.hook import Rows
from lrgate_cpp.model import Model
from lrgate_cpp.runtime import Context
from lrgate_cpp.template import encode_messages, template_for

__all__ = ["MIN_SHARED_PREFIX", "LastPromptReader", "last_prompt_rows"]

# Shorter common prefixes are decoded with each prompt; copying them saves little.
MIN_SHARED_PREFIX = 8


class LastPromptReader:
    """Reader of ``l_out-<layer>`` rows at the last prompt token, over one open context.

    Each batch of prompts is decoded only as far as the layer
    (:meth:`Context.prefill_until`), so later layers and the logits cost
    nothing. The context grows when a prompt does not fit it.

    Chat-formatted prompts share their opening tokens (the template's
    system turn and the start of the user turn). With ``share_prefix``, the
    longest prefix common to the prompts of a read is decoded once into a
    sequence of its own and copied into every prompt's sequence, so only
    the rest of each prompt is decoded. The rows then differ from a
    whole-prompt decode by float rounding only (other batch shapes).

    Args:
        model: the loaded model.
        layer: block whose output is read; not the last block.
        batch_prompts: prompts decoded together as separate sequences.
        n_threads: CPU threads; None uses all cores.
        share_prefix: decode the common prefix once (default).
    """

    def __init__(self, model: Model, layer: int, batch_prompts: int = 8,
                 n_threads: int | None = None, share_prefix: bool = True) -> None:
        check_layers(model, [layer])
        if batch_prompts < 1:
            raise ValueError(f"batch_prompts must be >= 1; got {batch_prompts}")
        self.model = model
        self.node = f"l_out-{layer}"
        self.batch_prompts = batch_prompts
        self.n_threads = n_threads
        self.share_prefix = share_prefix
        self.template = template_for(model)
        self._ctx: Context | None = None
        self._capture = None
        self._prefix: list[int] = []  # tokens decoded into the prefix sequence

    @property
    def _prefix_seq(self) -> int:
        return self.batch_prompts

    def _context_for(self, longest: int, prefix: int) -> Context:
        if (self._ctx is not None and self._ctx.n_batch >= longest
                and self._ctx.n_ctx >= self._ctx.n_batch + prefix):
            return self._ctx
        self.close()
        n_batch = max(longest, 512)
        self._ctx = Context(self.model, n_ctx=n_batch + prefix, n_batch=n_batch,
                            n_seq_max=self.batch_prompts + 1, n_threads=self.n_threads)
        assert self._ctx.hook is not None
        self._capture = self._ctx.hook.capture(self.node, rows=Rows.LAST_PROMPT,
                                               capacity=n_batch)
        return self._ctx

    def encode(self, text: str) -> list[int]:
        """Return the chat-formatted token ids of ``text`` as a user turn."""
        return encode_messages(self.model, self.template, [{"role": "user", "content": text}])

    def read(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 rows of shape (len(texts), n_embd), one per text."""
        if not texts:
            raise ValueError("texts is empty; pass at least one text")
        encoded = [self.encode(t) for t in texts]
        shared = _common_prefix_length(encoded) if self.share_prefix else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        suffixes = [tokens[shared:] for tokens in encoded]
        ctx = self._context_for(max(max(len(t) for t in suffixes), shared), shared)
        self._load_prefix(ctx, encoded[0][:shared])
        capture = self._capture
        assert capture is not None
        out = np.empty((len(texts), self.model.n_embd), dtype=np.float32)
        for group in pack_prompts(list(range(len(texts))), suffixes, self.batch_prompts,
                                  ctx.n_batch):
            if shared:
                for seq in range(len(group)):
                    ctx.copy_sequence(self._prefix_seq, seq)
            capture.reset()
            ctx.prefill_until({seq: suffixes[i] for seq, i in enumerate(group)}, self.node)
            data, seqs, _ = capture.read()
            for seq, i in enumerate(group):
                out[i] = data[seqs == seq][-1]
        return out

    def _load_prefix(self, ctx: Context, prefix: list[int]) -> None:
        """Decode ``prefix`` into the prefix sequence unless it already contains it."""
        if prefix == self._prefix:
            return
        ctx.clear(self._prefix_seq)
        self._prefix = []
        if prefix:
            ctx.prefill_until({self._prefix_seq: prefix}, self.node, clear=False)
            self._prefix = list(prefix)

    def close(self) -> None:
        """Free the context; a later :meth:`read` makes a new one."""
        if self._ctx is not None:
            self._ctx.close()
        self._ctx = None
        self._capture = None
        self._prefix = []

    def __enter__(self) -> LastPromptReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _common_prefix_length(encoded: Sequence[list[int]]) -> int:
    """Return how many leading tokens all prompts share, leaving each at least one of its own."""
    first = encoded[0]
    length = min(len(tokens) for tokens in encoded) - 1
    for tokens in encoded[1:]:
        n = 0
        while n < length and tokens[n] == first[n]:
            n += 1
        length = n
    return max(length, 0)


def last_prompt_rows(model: Model, texts: Sequence[str], layer: int, batch_prompts: int = 8,
                     n_threads: int | None = None) -> np.ndarray:
    """Return ``l_out-<layer>`` at the last prompt token of each text, without storing.

    Opens a context for this call; keep a :class:`LastPromptReader` to read
    many times.

    Returns:
        float32 of shape (len(texts), n_embd).
    """
    with LastPromptReader(model, layer, batch_prompts, n_threads) as reader:
        return reader.read(texts)
