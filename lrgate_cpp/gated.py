"""Gated chat on a real model: load a model and its bundle, then reply turn by turn.

The gate reads ``l_out-<layer>`` at the last prompt token of each user turn,
decides the route in that same prefill, and keeps it for every token of the
reply. The conversation stays in the KV cache of sequence 0: each turn
re-renders the whole conversation with the model's template, keeps the
longest token prefix the cache already holds and prefills only the rest.
Earlier turns therefore keep the edits of the route decided for them.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.hook import GateDecision, Hook, Readout, Route
from lrgate_cpp.languages import check_language
from lrgate_cpp.model import Model
from lrgate_cpp.readout import LowRankReadout
from lrgate_cpp.runtime import Context, ContextFullError, Sampling
from lrgate_cpp.shipped import find_shipped_bundle
from lrgate_cpp.template import Message, encode_messages, template_for
from lrgate_cpp.zoo import DEFAULT_MODEL, KNOWN_MODELS, resolve_model_path

__all__ = ["ChatReply", "GatedModel", "ReplyStream"]

log = logging.getLogger(__name__)

_SEQ = 0
_ROUTES = {"harmful": Route.HARMFUL, "harmless": Route.HARMLESS}


@dataclass
class ChatReply:
    """One assistant reply and the gate decision it was generated under.

    Attributes:
        text: the reply, decoded as UTF-8 (invalid bytes replaced).
        tokens: the reply's token ids, end-of-generation token excluded.
        lang: language whose readout and threshold were used.
        budget: examples per class that language was calibrated with; 0 for
            the budget-0 readout.
        threshold: logit at or above which the gate routes as harmful.
        decision: the gate's decision; None when the turn stopped before
            the prompt was decoded. With ``gate=False`` or a forced route the
            logit is still the readout's, and ``route`` is the one applied.
        gate: whether gating was on for this turn.
        forced_route: "harmful" or "harmless" when the route was forced, else None.
        stop_reason: "eog", "max_tokens", "context_full" or "interrupted".
        n_prompt_tokens: tokens of the rendered conversation.
        n_reused_tokens: of those, tokens reused from the KV cache.
    """

    lang: str
    budget: int
    threshold: float
    gate: bool
    forced_route: str | None = None
    n_prompt_tokens: int = 0
    n_reused_tokens: int = 0
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    decision: GateDecision | None = None
    stop_reason: str = "interrupted"


class ReplyStream:
    """Text pieces of a reply as they are generated; :attr:`reply` is the result.

    Closing the stream early (or an exception such as KeyboardInterrupt
    while iterating) stops generation and leaves the KV cache consistent
    with the tokens decoded so far.
    """

    def __init__(self, pieces: Iterator[str], reply: ChatReply) -> None:
        self._pieces = pieces
        self.reply = reply

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        self._pieces.close()  # type: ignore[attr-defined]

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GatedModel:
    """A model, its gate bundle and one chat context with the gate attached.

    Args:
        model: a GGUF path or a short name from ``KNOWN_MODELS`` (default
            ``DEFAULT_MODEL``).
        bundle: a bundle file, a loaded :class:`GateBundle`, or None (default)
            to use the shipped bundle whose model fingerprint matches.
        n_ctx: context window in tokens, shared by the whole conversation
            (default 4096).
        n_threads: CPU threads; default all cores.

    Raises:
        FileNotFoundError: the model or bundle file is missing.
        BundleNotFoundError: no shipped bundle fits the model.
        ModelMismatchError: the given bundle was fitted on another model.
        BundleError, ModelError: a file is invalid.

    The bundle is checked against the model's fingerprint right after the
    weights are mapped, before the context is created.
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL,
                 bundle: str | os.PathLike[str] | GateBundle | None = None,
                 n_ctx: int = 4096, n_threads: int | None = None) -> None:
        self.context: Context | None = None
        # A bundle file is read before the model, so that a bad path fails fast.
        self.bundle_path: Path | None = None
        loaded: GateBundle | None
        if bundle is None or isinstance(bundle, GateBundle):
            loaded = bundle
        else:
            self.bundle_path = Path(bundle)
            loaded = GateBundle.load(self.bundle_path)
        self.model = Model(resolve_model_path(model))
        try:
            fingerprint = self.model.fingerprint()
            if loaded is None:
                preferred = str(model) if str(model) in KNOWN_MODELS else self.model.path.stem
                self.bundle_path, loaded = find_shipped_bundle(fingerprint, preferred)
            else:
                loaded.check_model(fingerprint)
            self.bundle: GateBundle = loaded
            self.context = Context(self.model, n_ctx=n_ctx, n_threads=n_threads)
        except BaseException:
            self.close()
            raise
        self.template = template_for(self.model)
        self.node = f"l_out-{self.bundle.layer}"
        default = self.bundle.default
        budget0 = Readout(self.bundle.basis_t, default.mean, default.scale, default.weight,
                          float(default.bias))
        self.hook.gate(self.node, budget0, np.ascontiguousarray(self.bundle.v_hrl, np.float32),
                       self.bundle.alpha)
        self._language_gates: dict[str, tuple[Readout, float, int]] = {}
        self._cached: list[int] = []  # tokens of sequence 0 in the KV cache

    @property
    def hook(self) -> Hook:
        """The native hook of the chat context."""
        hook = self.ctx.hook
        assert hook is not None, "GatedModel contexts are created with the hook"
        return hook

    @property
    def calibrated_languages(self) -> tuple[str, ...]:
        """Languages with a checked threshold: the source languages, then calibrated ones."""
        return tuple(dict.fromkeys((*self.bundle.source_languages, *self.bundle.calibrations)))

    def language_gate(self, lang: str) -> tuple[Readout, float, int]:
        """Return ``(readout, threshold, budget)`` for ``lang``, built once per language.

        Raises:
            ValueError: ``lang`` is not a supported ISO 639-1 code.

        Warns with :class:`UncalibratedLanguageWarning` (first use only) when
        ``lang`` has no calibration, because the budget-0 readout is used.
        """
        lang = check_language(lang)
        if lang not in self._language_gates:
            readout, threshold = self._readout_of(self.bundle.make_readout(lang))
            calibration = self.bundle.calibrations.get(lang)
            budget = calibration.budget if calibration is not None else 0
            self._language_gates[lang] = (readout, threshold, budget)
        return self._language_gates[lang]

    @staticmethod
    def _readout_of(pair: tuple[LowRankReadout, float]) -> tuple[Readout, float]:
        fitted, threshold = pair
        return Readout(fitted.basis_t_, fitted.mean_, fitted.scale_, fitted.coef_,
                       float(fitted.intercept_)), float(threshold)

    # Chat -----------------------------------------------------------------------

    def chat(self, messages: list[Message], lang: str, max_new_tokens: int = 512,
             sampling: Sampling = Sampling(), route: str | None = None,
             gate: bool = True) -> ChatReply:
        """Generate the assistant's reply to a conversation; see :meth:`stream`."""
        stream = self.stream(messages, lang, max_new_tokens, sampling, route, gate)
        for _ in stream:
            pass
        return stream.reply

    def stream(self, messages: list[Message], lang: str, max_new_tokens: int = 512,
               sampling: Sampling = Sampling(), route: str | None = None,
               gate: bool = True) -> ReplyStream:
        """Start the assistant's reply to a conversation and stream its text.

        Args:
            messages: the whole conversation so far, ending with a user
                message (dicts with "role" and "content").
            lang: ISO 639-1 code of the user's language; selects the readout
                and threshold.
            max_new_tokens: maximum tokens in the reply (default 512).
            sampling: token sampling (default greedy).
            route: None (default) lets the gate decide; "harmful" or
                "harmless" forces that route for this reply.
            gate: False runs the plain model, with no row added or ablated.

        Raises:
            ValueError: bad arguments or language code.
            ContextFullError: the rendered conversation does not fit the context
                (raised before any token is decoded, so the chat can go on).
        """
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user message")
        if route is not None and route not in _ROUTES:
            raise ValueError(f"route must be None, 'harmful' or 'harmless'; got {route!r}")
        if route is not None and not gate:
            raise ValueError(f"route {route!r} needs the gate; drop gate=False or the route")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
        lang = check_language(lang)
        readout, threshold, budget = self.language_gate(lang)
        tokens = encode_messages(self.model, self.template, messages)
        n_ctx = self.ctx.n_ctx
        if len(tokens) >= n_ctx:
            raise ContextFullError(
                f"the conversation is {len(tokens)} tokens, but the context window is {n_ctx} "
                "tokens; "
                "shorten the prompt, start a new conversation, or raise n_ctx")
        force = Route.NONE if not gate else _ROUTES.get(route or "")
        self.hook.configure_sequence(_SEQ, threshold, readout, force=force)
        reply = ChatReply(lang=lang, budget=budget, threshold=threshold, gate=gate,
                          forced_route=route, n_prompt_tokens=len(tokens))
        return ReplyStream(self._generate(tokens, max_new_tokens, sampling, reply), reply)

    def reset(self) -> None:
        """Forget the conversation kept in the KV cache."""
        self.ctx.clear(_SEQ)
        self._cached = []

    @property
    def ctx(self) -> Context:
        if self.context is None:
            raise ValueError("the gated model is closed")
        return self.context

    def _generate(self, tokens: list[int], max_new_tokens: int, sampling: Sampling,
                  reply: ChatReply) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        sampler = sampling.make_sampler()
        try:
            self._prefill(tokens, reply)
            reply.decision = self.hook.decision(_SEQ)
            reply.stop_reason = "max_tokens"
            for i in range(max_new_tokens):
                token = self.ctx.sample(_SEQ, sampler)
                if self.model.is_eog(token):
                    reply.stop_reason = "eog"
                    break
                reply.tokens.append(token)
                piece = decoder.decode(self.model.token_bytes(token))
                if piece:
                    pieces.append(piece)
                    yield piece
                if i == max_new_tokens - 1:
                    break
                if self.ctx.positions[_SEQ] >= self.ctx.n_ctx:
                    reply.stop_reason = "context_full"
                    log.warning("the reply filled the %d-token context", self.ctx.n_ctx)
                    break
                self.ctx.step({_SEQ: token})
                self._cached.append(token)
            tail = decoder.decode(b"", final=True)
            if tail:
                pieces.append(tail)
                yield tail
        except BaseException:
            reply.stop_reason = "interrupted"
            pieces.append(decoder.decode(b"", final=True))
            # A decode may have been cut off between its position update and
            # the bookkeeping here; drop whatever the cache contains past the
            # tokens known to be decoded.
            self.ctx.truncate(_SEQ, len(self._cached))
            raise
        finally:
            llama_cpp.llama_sampler_free(sampler)
            reply.text = "".join(pieces)

    def _prefill(self, tokens: list[int], reply: ChatReply) -> None:
        """Keep the cached prefix shared with ``tokens`` and prefill the rest."""
        if len(self._cached) != self.ctx.positions[_SEQ]:
            raise AssertionError("cached tokens and context position disagree")
        common = 0
        for cached, new in zip(self._cached, tokens):
            if cached != new:
                break
            common += 1
        # Prefill at least one token, so the gate decides on this turn.
        common = min(common, len(tokens) - 1)
        self.ctx.truncate(_SEQ, common)
        del self._cached[common:]
        reply.n_reused_tokens = common
        log.debug("reusing %d cached tokens, prefilling %d", common, len(tokens) - common)
        self.ctx.prefill({_SEQ: tokens[common:]})
        self._cached.extend(tokens[common:])

    def close(self) -> None:
        """Free the context, then the model."""
        if self.context is not None:
            self.context.close()
            self.context = None
        self.model.close()

    def __enter__(self) -> GatedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
