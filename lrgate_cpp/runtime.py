"""A llama.cpp context with lrgate's hook attached, and batched decoding.

The context is created through ``llama_init_from_model`` so that the eval
callback can be set (llama-cpp-python's ``Llama`` class does not expose it).
Every batch reaches the graph as one micro-batch in batch order
(``n_ubatch == n_batch`` and a unified KV cache), which is what lets the
hook map graph rows to sequences.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import llama_cpp
import numpy as np

from lrgate_cpp.hook import Hook, NodeInfo, Rows
from lrgate_cpp.model import Model
from lrgate_cpp.native import load_hook_library

__all__ = ["Context", "ContextError", "ContextFullError", "Sampling"]

log = logging.getLogger(__name__)

# A Python eval callback: (tensor pointer, ask, user data pointer) -> bool.
EvalCallback = Callable[[int, bool, int], bool]


class ContextError(RuntimeError):
    """llama.cpp could not create a context or decode a batch."""


class ContextFullError(ContextError, ValueError):
    """A prompt or reply does not fit in the context window."""


@dataclass(frozen=True)
class Sampling:
    """Token sampling settings.

    Attributes:
        temperature: 0 (default) samples greedily; above 0 scales logits.
        top_p: nucleus mass kept when sampling with a temperature, in (0, 1].
        top_k: keep the k most likely tokens first; 0 keeps all.
        seed: random seed for temperature sampling.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0; got {self.top_k}")

    def make_sampler(self) -> llama_cpp.llama_sampler_p:
        """Build a llama.cpp sampler chain; the caller frees it."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self.temperature == 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if self.top_k > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(self.top_k))
        if self.top_p < 1:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(self.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(self.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(self.seed))
        return chain


class Context:
    """A llama.cpp context over a loaded model, with the native hook attached.

    Args:
        model: the loaded model.
        n_ctx: context window in tokens, shared by all sequences.
        n_batch: maximum tokens per decode; longer prompts are split.
            Default min(n_ctx, 512).
        n_seq_max: most sequences decoded together.
        n_threads: CPU threads; default all cores.
        hook: attach lrgate's native hook (default). False with no
            ``eval_callback`` makes a plain context.
        eval_callback: a ctypes ``ggml_backend_sched_eval_callback`` to
            attach instead of the native hook (for reference checks and
            benchmarks); the context keeps it referenced.
    """

    def __init__(self, model: Model, n_ctx: int = 4096, n_batch: int | None = None,
                 n_seq_max: int = 1, n_threads: int | None = None, hook: bool = True,
                 eval_callback: object | None = None) -> None:
        self._ptr = None
        self.hook: Hook | None = None
        if n_ctx < 16:
            raise ValueError(f"n_ctx must be at least 16 tokens; got {n_ctx}")
        n_batch = n_batch or min(n_ctx, 512)
        if not 1 <= n_batch <= n_ctx:
            raise ValueError(f"n_batch must be in 1..n_ctx ({n_ctx}); got {n_batch}")
        if not 1 <= n_seq_max <= 256:
            raise ValueError(f"n_seq_max must be in 1..256; got {n_seq_max}")
        self.model = model
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.n_threads = n_threads or os.cpu_count() or 1
        self._callback_ref = eval_callback

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.n_threads = self.n_threads
        params.n_threads_batch = self.n_threads
        params.kv_unified = True
        params.no_perf = True
        if hook and eval_callback is None:
            self.hook = Hook(model.n_embd, model.n_layer, n_batch)
            address = ctypes.cast(load_hook_library().lrg_eval_callback, ctypes.c_void_p).value
            self._callback_ref = llama_cpp.ggml_backend_sched_eval_callback(address)
            params.cb_eval = self._callback_ref
            params.cb_eval_user_data = ctypes.c_void_p(self.hook.state_pointer)
        elif eval_callback is not None:
            params.cb_eval = eval_callback
            params.cb_eval_user_data = None

        self._ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            if self.hook is not None:
                self.hook.free()
            raise ContextError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {model.path} "
                "(out of memory?)")
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ptr))
        self._memory = llama_cpp.llama_get_memory(self._ptr)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq_max)
        self._tokens_view = np.ctypeslib.as_array(self._batch.token, shape=(n_batch,))
        self._pos_view = np.ctypeslib.as_array(self._batch.pos, shape=(n_batch,))
        self._nseq_view = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(n_batch,))
        self._logits_view = np.ctypeslib.as_array(self._batch.logits, shape=(n_batch,))
        self.positions = [0] * n_seq_max
        # A sequence's logits live in llama.cpp's buffer only until the next
        # decode, so rows of earlier decodes are copied out (float32, n_vocab).
        self._logit_row: dict[int, int] = {}
        self._saved_logits: dict[int, np.ndarray] = {}
        if self.hook is not None:
            self.hook.nodes = self._probe_nodes()

    @property
    def ptr(self) -> llama_cpp.llama_context_p:
        if not self._ptr:
            raise ContextError("the context is closed")
        return self._ptr

    def _probe_nodes(self) -> dict[str, NodeInfo]:
        """Decode one token in probe mode to list the graph's nodes, then forget it."""
        assert self.hook is not None
        self.hook.probe(True)
        try:
            token = llama_cpp.llama_vocab_bos(self.model.vocab)
            self.decode([max(int(token), 0)], [0], [0], [Rows.PROMPT], [True])
        finally:
            self.hook.probe(False)
            self.clear()
        return self.hook.probed_nodes()

    # Low-level decode ---------------------------------------------------------

    def decode(self, tokens: list[int], positions: list[int], seq_ids: list[int],
               flags: list[int], logits: list[bool]) -> None:
        """Decode one batch of rows; all lists have one entry per row.

        Rows of one sequence must be in position order. ``flags`` are
        :class:`Rows` bits that tell the hook what each row is.
        """
        n = len(tokens)
        if not 0 < n <= self.n_batch:
            raise ValueError(f"invalid batch of {n} rows; expected 1 to {self.n_batch}")
        batch = self._batch
        batch.n_tokens = n
        self._tokens_view[:n] = tokens
        self._pos_view[:n] = positions
        self._nseq_view[:n] = 1
        self._logits_view[:n] = logits
        for i, seq in enumerate(seq_ids):
            batch.seq_id[i][0] = seq
        if self.hook is not None:
            self.hook.set_batch(np.asarray(seq_ids, dtype=np.int32),
                                np.asarray(flags, dtype=np.uint8))
        try:
            rc = llama_cpp.llama_decode(self.ptr, batch)
        finally:
            if self.hook is not None:
                self.hook.set_batch(np.zeros(0, np.int32), np.zeros(0, np.uint8))
        if self.hook is not None:
            self.hook.raise_errors()
        if rc == 1:
            raise ContextFullError(
                f"no room left in the {self.n_ctx}-token context; start a new conversation "
                "or raise n_ctx")
        if rc != 0:
            raise ContextError(f"llama_decode failed with code {rc}")

    # Sequences ----------------------------------------------------------------

    def prefill(self, prompts: dict[int, list[int]], logits: bool = True) -> None:
        """Append prompt tokens to one or more sequences and compute their logits.

        Sequences are packed into shared batches where they fit; a prompt
        longer than ``n_batch`` is split. The last token of each prompt is
        flagged as the last prompt row, so a gate decides there, and each
        sequence's gate decision is reset first. ``logits=False`` asks
        llama.cpp for no logits, for decodes that only feed the hook.
        """
        rows: list[tuple[int, int, int, int]] = []  # (seq, token, pos, flags)
        for seq, tokens in prompts.items():
            self._check_seq(seq)
            if not tokens:
                raise ValueError(f"sequence {seq} has an empty prompt")
            if self.positions[seq] + len(tokens) > self.n_ctx:
                raise ContextFullError(
                    f"prompt of {len(tokens)} tokens does not fit: sequence {seq} already "
                    f"holds {self.positions[seq]} of {self.n_ctx} context tokens")
            if self.hook is not None and self.hook.has_gate:
                self.hook.reset_sequence(seq)
                if len(tokens) > self.n_batch:
                    log.warning("prompt of %d tokens spans several batches of %d; the gate "
                                "decides at its last token and cannot edit earlier batches",
                                len(tokens), self.n_batch)
            start = self.positions[seq]
            for i, token in enumerate(tokens):
                last = i == len(tokens) - 1
                flag = Rows.PROMPT | (Rows.LAST_PROMPT if last else 0)
                rows.append((seq, token, start + i, int(flag)))
            self.positions[seq] = start + len(tokens)
        self._decode_rows(rows, logits)

    def prefill_until(self, prompts: dict[int, list[int]], node: str,
                      clear: bool = True) -> None:
        """Decode prompts only as far as graph node ``node``, to read activations there.

        Each forward pass ends once ``node`` is computed and the hook's
        operations on it ran, so layers after it cost nothing. Their KV
        cache entries are never written, so the given sequences are
        cleared afterwards; captures keep what they copied. ``clear=False``
        keeps the sequences, for a shared prefix that later decodes up to
        the same node extend (see :meth:`copy_sequence`).
        """
        if self.hook is None:
            raise ContextError("prefill_until needs a context created with the native hook "
                               "(hook=True)")
        self.hook.stop_after(node)
        try:
            self.prefill(prompts, logits=False)
        finally:
            self.hook.stop_after(None)
            if clear:
                for seq in prompts:
                    self.clear(seq)

    def step(self, tokens: dict[int, int]) -> None:
        """Append one sampled token to each given sequence and compute its logits."""
        rows = []
        for seq, token in tokens.items():
            self._check_seq(seq)
            if self.positions[seq] >= self.n_ctx:
                raise ContextFullError(f"sequence {seq} filled the {self.n_ctx}-token context")
            rows.append((seq, token, self.positions[seq], int(Rows.GENERATED)))
            self.positions[seq] += 1
        self._decode_rows(rows)

    def _decode_rows(self, rows: list[tuple[int, int, int, int]], logits: bool = True) -> None:
        for start in range(0, len(rows), self.n_batch):
            for seq, row in self._logit_row.items():
                self._saved_logits[seq] = self._read_logits(row)
            self._logit_row.clear()
            chunk = rows[start:start + self.n_batch]
            want = [logits and bool(flag & (Rows.LAST_PROMPT | Rows.GENERATED))
                    for _, _, _, flag in chunk]
            self.decode([r[1] for r in chunk], [r[2] for r in chunk], [r[0] for r in chunk],
                        [r[3] for r in chunk], want)
            for i, (seq, _, _, _) in enumerate(chunk):
                if want[i]:
                    self._logit_row[seq] = i
                    self._saved_logits.pop(seq, None)

    def _read_logits(self, row: int) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self.ptr, row)
        return np.ctypeslib.as_array(pointer, shape=(self.model.n_vocab,)).copy()

    def logits(self, seq: int) -> np.ndarray:
        """Return a copy of the sequence's last logits, float32 of shape (n_vocab,)."""
        if seq in self._logit_row:
            return self._read_logits(self._logit_row[seq])
        if seq in self._saved_logits:
            return self._saved_logits[seq].copy()
        raise ContextError(f"sequence {seq} has no logits; prefill it first")

    def sample(self, seq: int, sampler: llama_cpp.llama_sampler_p) -> int:
        """Sample the sequence's next token with a llama.cpp sampler chain."""
        if seq in self._logit_row:
            return int(llama_cpp.llama_sampler_sample(sampler, self.ptr, self._logit_row[seq]))
        if seq not in self._saved_logits:
            raise ContextError(f"sequence {seq} has no logits; prefill it first")
        return self._sample_saved(sampler, self._saved_logits[seq])

    def _sample_saved(self, sampler: llama_cpp.llama_sampler_p, logits: np.ndarray) -> int:
        """Run a sampler chain over copied logits, as llama_sampler_sample does."""
        candidates = (llama_cpp.llama_token_data * len(logits))()
        view = np.ctypeslib.as_array(candidates)
        view["id"] = np.arange(len(logits), dtype=np.int32)
        view["logit"] = logits
        view["p"] = 0.0
        array = llama_cpp.llama_token_data_array(candidates, len(logits), -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise ContextError("the sampler chain selected no token")
        token = int(array.data[array.selected].id)
        llama_cpp.llama_sampler_accept(sampler, token)
        return token

    def clear(self, seq: int | None = None) -> None:
        """Forget a sequence (or all of them) from the KV cache."""
        if seq is None:
            llama_cpp.llama_memory_clear(self._memory, True)
            self.positions = [0] * self.n_seq_max
            self._logit_row.clear()
            self._saved_logits.clear()
            seqs = range(self.n_seq_max)
        else:
            self._check_seq(seq)
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
            self.positions[seq] = 0
            self._logit_row.pop(seq, None)
            self._saved_logits.pop(seq, None)
            seqs = range(seq, seq + 1)
        if self.hook is not None:
            for s in seqs:
                self.hook.reset_sequence(s)

    def truncate(self, seq: int, n_keep: int) -> None:
        """Keep the first ``n_keep`` tokens of a sequence and drop the rest."""
        self._check_seq(seq)
        if n_keep < self.positions[seq]:
            llama_cpp.llama_memory_seq_rm(self._memory, seq, n_keep, -1)
            self.positions[seq] = n_keep
            self._logit_row.pop(seq, None)
            self._saved_logits.pop(seq, None)

    def copy_sequence(self, source: int, target: int) -> None:
        """Make ``target`` a copy of ``source``: same KV cache entries, same length.

        In the unified KV cache the copy shares the cells of ``source``, so
        it costs no memory and no compute. ``target`` is cleared first.
        """
        self._check_seq(source)
        self.clear(target)
        llama_cpp.llama_memory_seq_cp(self._memory, source, target, -1, -1)
        self.positions[target] = self.positions[source]

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq_max:
            raise ValueError(f"sequence id {seq} is outside 0..{self.n_seq_max - 1}")

    # Generation -----------------------------------------------------------------

    def generate(self, prompts: dict[int, list[int]], max_new_tokens: int,
                 sampling: Sampling = Sampling()) -> Iterator[tuple[int, int]]:
        """Prefill prompts, then yield ``(seq, token)`` as each sequence samples.

        All sequences advance in one batch per step. A sequence stops at an
        end-of-generation token (not yielded) or after ``max_new_tokens``.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        self.prefill(prompts)
        samplers = {seq: sampling.make_sampler() for seq in prompts}
        try:
            active = list(prompts)
            for _ in range(max_new_tokens):
                chosen: dict[int, int] = {}
                for seq in active:
                    token = self.sample(seq, samplers[seq])
                    if self.model.is_eog(token):
                        continue
                    chosen[seq] = token
                    yield seq, token
                active = list(chosen)
                if not active or _ == max_new_tokens - 1:
                    break
                self.step(chosen)
        finally:
            for sampler in samplers.values():
                llama_cpp.llama_sampler_free(sampler)

    def generate_all(self, prompts: dict[int, list[int]], max_new_tokens: int,
                     sampling: Sampling = Sampling()) -> dict[int, list[int]]:
        """Run :meth:`generate` to the end and return each sequence's tokens."""
        out: dict[int, list[int]] = {seq: [] for seq in prompts}
        for seq, token in self.generate(prompts, max_new_tokens, sampling):
            out[seq].append(token)
        return out

    def close(self) -> None:
        """Free the context, then the hook state it points to."""
        if getattr(self, "_ptr", None):
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ptr)
            self._ptr = None
        if self.hook is not None:
            self.hook.free()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
