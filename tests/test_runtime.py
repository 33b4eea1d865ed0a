"""The runtime on a real model: generation, sampling, history and limits."""

import numpy as np
import pytest

from conftest import chat_tokens
from lrgate_cpp.runtime import Context, ContextFullError, Sampling

pytestmark = pytest.mark.model


def test_greedy_is_deterministic(smollm):
    tokens = chat_tokens(smollm, "Name three colours.")
    with Context(smollm, n_ctx=512, n_threads=2) as ctx:
        first = ctx.generate_all({0: tokens}, 16)[0]
        ctx.clear()
        second = ctx.generate_all({0: tokens}, 16)[0]
    assert len(first) > 0
    assert first == second


def test_greedy_takes_argmax(smollm):
    tokens = chat_tokens(smollm, "Name three colours.")
    with Context(smollm, n_ctx=512, n_threads=2) as ctx:
        ctx.prefill({0: tokens})
        expected = int(np.argmax(ctx.logits(0)))
        ctx.clear()
        first = ctx.generate_all({0: tokens}, 1)[0]
    assert first == [expected]


def test_seeded_sampling_repeats(smollm):
    tokens = chat_tokens(smollm, "Tell me a story.")
    sampling = Sampling(temperature=0.9, top_p=0.95, seed=123)
    outputs = []
    with Context(smollm, n_ctx=512, n_threads=2) as ctx:
        for seed in (123, 123, 7):
            ctx.clear()
            outputs.append(ctx.generate_all({0: tokens}, 24, Sampling(0.9, 0.95, 0, seed))[0])
    assert sampling.seed == 123
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_stops_at_end_of_generation(smollm):
    tokens = chat_tokens(smollm, "Say only the word yes.")
    with Context(smollm, n_ctx=512, n_threads=2) as ctx:
        out = ctx.generate_all({0: tokens}, 200)[0]
    assert len(out) < 200
    assert not any(smollm.is_eog(t) for t in out)


def test_history_stays_in_cache(smollm):
    first = chat_tokens(smollm, "My name is Ada.")
    with Context(smollm, n_ctx=512, n_threads=2) as ctx:
        reply = ctx.generate_all({0: first}, 8)[0]
        assert ctx.positions[0] == len(first) + len(reply) - 1
        ctx.truncate(0, len(first))
        assert ctx.positions[0] == len(first)


def test_prompt_longer_than_context(smollm):
    with Context(smollm, n_ctx=64, n_threads=2) as ctx:
        # llama.cpp rounds the window up to a multiple of 256 tokens.
        assert ctx.n_ctx == 256
        with pytest.raises(ContextFullError, match="does not fit"):
            ctx.prefill({0: [1] * 300})
        # The context is still usable afterwards.
        ctx.prefill({0: chat_tokens(smollm, "Hi")[:30]})


def test_long_prompt_is_split_into_batches(smollm):
    tokens = chat_tokens(smollm, "word " * 150)
    with Context(smollm, n_ctx=512, n_batch=64, n_threads=2, hook=False) as small:
        small.prefill({0: tokens})
        split = small.logits(0)
    with Context(smollm, n_ctx=512, n_batch=512, n_threads=2, hook=False) as large:
        large.prefill({0: tokens})
        whole = large.logits(0)
    # Quantised matmuls take other code paths for other batch shapes, so
    # the logits agree closely but not bit for bit.
    assert len(tokens) > 64
    assert int(np.argmax(split)) == int(np.argmax(whole))
    assert np.corrcoef(split, whole)[0, 1] > 0.999


def test_bad_settings(smollm):
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1.0)
    with pytest.raises(ValueError, match="n_batch"):
        Context(smollm, n_ctx=128, n_batch=256)
    with Context(smollm, n_ctx=128, n_threads=2) as ctx:
        with pytest.raises(ValueError, match="empty prompt"):
            ctx.prefill({0: []})
        with pytest.raises(ValueError, match="sequence id"):
            ctx.prefill({3: [1, 2]})


def test_logits_survive_later_batches(smollm):
    a = chat_tokens(smollm, "Name a fruit.")
    b = chat_tokens(smollm, "Name a country in Europe, please.")
    with Context(smollm, n_ctx=512, n_batch=512, n_seq_max=2, n_threads=2, hook=False) as ref:
        ref.prefill({0: a})
        expected = ref.logits(0)
    with Context(smollm, n_ctx=512, n_batch=16, n_seq_max=2, n_threads=2, hook=False) as ctx:
        # a's last token lands in an earlier decode than b's.
        ctx.prefill({0: a, 1: b})
        got = ctx.logits(0)
        token = ctx.sample(0, Sampling().make_sampler())
    assert int(np.argmax(got)) == int(np.argmax(expected))
    assert token == int(np.argmax(got))
