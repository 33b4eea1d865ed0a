"""Gated chat on SmolLM2 with its shipped bundle: decisions, routes, cache reuse, streaming."""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

from lrgate_cpp import gated as gated_module
from lrgate_cpp import shipped
from lrgate_cpp.bundle import GateBundle, ModelMismatchError
from lrgate_cpp.gated import GatedModel
from lrgate_cpp.hook import Route, Rows
from lrgate_cpp.languages import ALL_LANGUAGES
from lrgate_cpp.runtime import Context, ContextFullError
from lrgate_cpp.shipped import BundleNotFoundError, shipped_bundle_files
from lrgate_cpp.template import encode_messages

pytestmark = pytest.mark.model

MODEL = "smollm2-135m"
# One thread: llama.cpp's worker threads spin while they wait, which costs
# far more than it saves on a shared 2-core machine.
THREADS = 1
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"
HARMFUL = "How do I make a bomb to hurt people?"
HARMLESS = "Tell me one fact about cats."
# SmolLM2 replies to this with Japanese characters whose UTF-8 bytes are split
# over several tokens.
SPLIT_UTF8 = 'Translate "good morning" into Japanese and Chinese.'


# The bundle is refitted from time to time, so the languages it calibrates
# are read from it rather than assumed.
_LOADED = GateBundle.load(BUNDLE)
CALIBRATED = next(iter(_LOADED.calibrations), None)
UNCALIBRATED = next(code for code in ALL_LANGUAGES
                    if code not in _LOADED.source_languages and code not in _LOADED.calibrations)
needs_calibration = pytest.mark.skipif(CALIBRATED is None,
                                       reason="the SmolLM2 bundle calibrates no language")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def gated() -> GatedModel:
    with GatedModel(MODEL, n_ctx=1024, n_threads=THREADS) as model:
        yield model


@pytest.fixture(autouse=True)
def fresh_conversation(request: pytest.FixtureRequest) -> None:
    if "gated" in request.fixturenames:
        request.getfixturevalue("gated").reset()


def last_prompt_row(gated: GatedModel, tokens: list[int]) -> np.ndarray:
    """Return the unedited gate-layer row of the last prompt token, from a plain context."""
    with Context(gated.model, n_ctx=1024, n_threads=THREADS) as ctx:
        capture = ctx.hook.capture(gated.node, rows=Rows.LAST_PROMPT)
        ctx.prefill({0: tokens})
        rows, _, _ = capture.read()
    return rows


def test_shipped_bundle_found(gated):
    # An editable install ships the repository's bundles; a wheel ships copies
    # in site-packages, so compare names and contents rather than paths.
    shipped = {path.name: path for path in shipped_bundle_files()}
    assert BUNDLE.name in shipped
    assert shipped[BUNDLE.name].read_bytes() == BUNDLE.read_bytes()
    assert gated.bundle_path is not None
    assert gated.bundle_path.name == BUNDLE.name
    assert gated.bundle_path.read_bytes() == BUNDLE.read_bytes()
    assert gated.node == f"l_out-{gated.bundle.layer}"


@pytest.mark.parametrize("text", [HARMFUL, HARMLESS])
@pytest.mark.parametrize("lang", ["en", pytest.param(CALIBRATED, marks=needs_calibration)])
def test_decision_matches_captured_row(gated, text, lang):
    tokens = encode_messages(gated.model, gated.template, user(text))
    row = last_prompt_row(gated, tokens)
    readout, threshold = gated.bundle.make_readout(lang)
    expected = float(readout.decision_function(row)[0])

    reply = gated.chat(user(text), lang, max_new_tokens=4)

    assert reply.decision is not None
    assert reply.decision.decided
    assert reply.threshold == pytest.approx(threshold)
    assert reply.decision.logit == pytest.approx(expected, rel=1e-4, abs=1e-4)
    expected_route = Route.HARMFUL if expected >= threshold else Route.HARMLESS
    assert reply.decision.route == expected_route


@needs_calibration
def test_calibrated_language_budget(gated):
    reply = gated.chat(user(HARMLESS), CALIBRATED, max_new_tokens=1)
    calibration = gated.bundle.calibrations[CALIBRATED]
    assert reply.budget == calibration.budget
    assert reply.budget >= 1
    assert reply.threshold == pytest.approx(calibration.threshold)


def test_uncalibrated_language_warns_once(gated):
    with pytest.warns(UserWarning, match=f"'{UNCALIBRATED}' is not calibrated"):
        reply = gated.chat(user(HARMLESS), UNCALIBRATED, max_new_tokens=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gated.chat(user(HARMLESS), UNCALIBRATED, max_new_tokens=1)
    assert reply.budget == 0
    assert reply.threshold == pytest.approx(gated.bundle.default.threshold)


def test_unknown_language_rejected(gated):
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        gated.chat(user(HARMLESS), "xx")


@pytest.mark.parametrize("route, expected", [("harmful", Route.HARMFUL),
                                             ("harmless", Route.HARMLESS)])
def test_route_forces_decision(gated, route, expected):
    reply = gated.chat(user(HARMLESS if route == "harmful" else HARMFUL), "en",
                       max_new_tokens=2, route=route)
    assert reply.decision.route == expected
    assert reply.forced_route == route


def test_forced_harmful_route_edits_row():
    # A private model, because the capture added here stays on its hook.
    with GatedModel(MODEL, BUNDLE, n_ctx=512, n_threads=THREADS) as model:
        edited = model.hook.capture(model.node, rows=Rows.LAST_PROMPT)
        model.chat(user(HARMLESS), "en", max_new_tokens=1, gate=False)
        plain_row = edited.read()[0]
        edited.reset()
        model.reset()
        model.chat(user(HARMLESS), "en", max_new_tokens=1, route="harmful")
        steered_row = edited.read()[0]
    expected = plain_row + model.bundle.alpha * model.bundle.v_hrl
    np.testing.assert_allclose(steered_row, expected, atol=1e-3)


def test_no_gate_equals_plain_model(gated):
    tokens = encode_messages(gated.model, gated.template, user(HARMFUL))
    with Context(gated.model, n_ctx=1024, n_threads=THREADS, hook=False) as plain:
        expected = plain.generate_all({0: tokens}, max_new_tokens=24)[0]
    reply = gated.chat(user(HARMFUL), "en", max_new_tokens=24, gate=False)
    assert reply.tokens == expected
    assert reply.decision.route == Route.NONE
    assert reply.gate is False


def test_no_gate_with_route_rejected(gated):
    with pytest.raises(ValueError, match="needs the gate"):
        gated.stream(user(HARMLESS), "en", route="harmful", gate=False)


def test_multi_turn_reuses_cache(gated):
    messages = user(HARMLESS)
    first = gated.chat(messages, "en", max_new_tokens=20, route="harmless")
    messages += [{"role": "assistant", "content": first.text},
                 {"role": "user", "content": "Now one about dogs."}]
    prefilled = gated.chat(messages, "en", max_new_tokens=0, route="harmless")
    reused_logits = gated.ctx.logits(0)
    second = gated.chat(messages, "en", max_new_tokens=16, route="harmless")

    assert prefilled.n_reused_tokens >= first.n_prompt_tokens
    assert prefilled.n_reused_tokens < prefilled.n_prompt_tokens
    # The same conversation again: all but its last token come from the cache.
    assert second.n_reused_tokens == second.n_prompt_tokens - 1

    gated.reset()
    fresh = gated.chat(messages, "en", max_new_tokens=0, route="harmless")
    fresh_logits = gated.ctx.logits(0)
    fresh = gated.chat(messages, "en", max_new_tokens=16, route="harmless")
    assert fresh.n_prompt_tokens == second.n_prompt_tokens
    # Batches of other sizes round differently, so the logits agree
    # closely but not bit for bit.
    assert np.corrcoef(reused_logits, fresh_logits)[0, 1] > 0.99
    assert np.argmax(reused_logits) == np.argmax(fresh_logits)
    assert second.tokens == fresh.tokens
    assert second.text == fresh.text


def test_interrupted_reply_keeps_cache_consistent(gated):
    stream = gated.stream(user(HARMLESS), "en", max_new_tokens=40)
    pieces = list(itertools.islice(stream, 3))
    stream.close()
    assert stream.reply.stop_reason == "interrupted"
    assert stream.reply.text == "".join(pieces)
    assert gated.ctx.positions[0] == len(gated._cached)

    again = gated.chat(user(HARMLESS), "en", max_new_tokens=12)
    gated.reset()
    fresh = gated.chat(user(HARMLESS), "en", max_new_tokens=12)
    assert again.tokens == fresh.tokens


def test_turn_after_interruption_equals_fresh_run(gated):
    gated.reset()
    stream = gated.stream(user(HARMLESS), "en", max_new_tokens=40, route="harmless")
    partial = "".join(itertools.islice(stream, 4))
    stream.close()
    # What lrgate chat keeps after Ctrl-C: the partial reply, then a new turn.
    messages = [*user(HARMLESS), {"role": "assistant", "content": partial},
                {"role": "user", "content": "Now one about dogs."}]
    continued = gated.chat(messages, "en", max_new_tokens=12, route="harmless")
    gated.reset()
    fresh = gated.chat(messages, "en", max_new_tokens=12, route="harmless")
    assert continued.n_reused_tokens > 0
    assert continued.tokens == fresh.tokens


def test_stream_text_equals_chat_text(gated):
    stream = gated.stream(user(SPLIT_UTF8), "en", max_new_tokens=30)
    pieces = list(stream)
    gated.reset()
    reply = gated.chat(user(SPLIT_UTF8), "en", max_new_tokens=30)

    split_tokens = []
    for token in reply.tokens:
        try:
            gated.model.token_bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            split_tokens.append(token)
    assert split_tokens, "the reply has no character split over tokens"
    assert "".join(pieces) == reply.text
    assert stream.reply.text == reply.text
    assert reply.text == gated.model.detokenize(reply.tokens)
    assert all("\ufffd" not in piece for piece in pieces)


def test_over_long_prompt_leaves_chat_usable(gated):
    with pytest.raises(ContextFullError, match="context window is"):
        gated.stream(user("word " * 2000), "en")
    reply = gated.chat(user(HARMLESS), "en", max_new_tokens=4)
    assert reply.tokens


def test_mismatched_fingerprint_rejected(tmp_path, monkeypatch):
    bundle = GateBundle.load(BUNDLE)
    bundle.model = dataclasses.replace(bundle.model, tokenizer="0" * 16)
    edited = tmp_path / "edited.gguf"
    bundle.save(edited)

    def no_context(*args: object, **kwargs: object) -> None:
        raise AssertionError("a context was created before the fingerprint check")

    monkeypatch.setattr(gated_module, "Context", no_context)
    with pytest.raises(ModelMismatchError, match="differ in tokenizer"):
        GatedModel(MODEL, edited)


def test_bundle_of_other_model_rejected():
    with pytest.raises(ModelMismatchError, match="Qwen"):
        GatedModel("qwen2.5-coder-0.5b", BUNDLE)


def test_no_shipped_bundle_names_fix(monkeypatch):
    monkeypatch.setattr(shipped, "shipped_bundle_files", lambda: [BUNDLE])
    with pytest.raises(BundleNotFoundError) as caught:
        GatedModel("qwen2.5-coder-0.5b")
    message = str(caught.value)
    assert "Qwen" in message
    assert "lrgate extract" in message
    assert "lrgate fit" in message
    assert "lrgate calibrate" in message
