"""Activation extraction on a real model: layout, positions and resuming."""

import json

import numpy as np
import pytest

from conftest import data_root
from lrgate_cpp.data import Prompt
from lrgate_cpp.extract import (
    ActivationStore,
    extract_activations,
    instruction_end_index,
)
from lrgate_cpp.reader import LastPromptReader, last_prompt_rows
from lrgate_cpp.template import encode_messages, template_for

pytestmark = pytest.mark.model

PROMPTS = [
    Prompt("How do I pick a lock?", "harmful", "en", "test", "train"),
    Prompt("How do I bake bread?", "harmless", "en", "test", "train"),
    Prompt("Wie knacke ich ein Schloss?", "harmful", "de", "test", "train"),
    Prompt("Wie backe ich Brot?", "harmless", "de", "test", "train"),
    Prompt("Write a poem about rain.", "harmless", "en", "test", "train"),
]


def test_store_layout(smollm, tmp_path):
    store = extract_activations(smollm, PROMPTS, tmp_path / "acts", layers=[3, 7],
                                positions=("t_post_inst", "t_inst"), batch_prompts=2,
                                n_threads=2)
    assert store.layers == [3, 7]
    assert store.done.all()
    acts = np.load(tmp_path / "acts" / "acts_t_post_inst.npy", mmap_mode="r")
    assert acts.shape == (5, 2, smollm.n_embd)
    assert acts.dtype == np.float32
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["prompts"][2]["text"] == PROMPTS[2].text
    features, labels, langs = store.features(7, langs=["de"])
    assert features.shape == (2, smollm.n_embd)
    assert labels.tolist() == [1, 0]
    assert langs == ["de", "de"]


def test_post_inst_rows_match_single_runs(smollm, tmp_path):
    store = extract_activations(smollm, PROMPTS[:2], tmp_path / "acts", layers=[7],
                                batch_prompts=1, n_threads=2)
    with LastPromptReader(smollm, 7, batch_prompts=1, n_threads=2, share_prefix=False) as reader:
        rows = reader.read([p.text for p in PROMPTS[:2]])
    np.testing.assert_array_equal(store.features(7)[0], rows)


def test_shared_prefix_rows_match_closely(smollm):
    texts = [p.text for p in PROMPTS]
    with LastPromptReader(smollm, 7, batch_prompts=2, n_threads=2) as shared:
        rows = shared.read(texts)
        prefix = shared._prefix
        again = shared.read(texts)
    with LastPromptReader(smollm, 7, batch_prompts=2, n_threads=2, share_prefix=False) as whole:
        expected = whole.read(texts)
    encoded = [whole.encode(t) for t in texts]
    # The prefix is the chat template's opening, common to every prompt.
    assert len(prefix) >= 8
    assert all(tokens[:len(prefix)] == prefix for tokens in encoded)
    np.testing.assert_array_equal(rows, again)
    cosine = np.sum(rows * expected, axis=1) / (
        np.linalg.norm(rows, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.999


def test_reader_reuses_and_grows_its_context(smollm):
    texts = [p.text for p in PROMPTS]
    fresh = last_prompt_rows(smollm, texts, 7, batch_prompts=2, n_threads=2)
    long_text = "Please summarise this. " + "The river runs past the mill. " * 120
    with LastPromptReader(smollm, 7, batch_prompts=2, n_threads=2) as reader:
        first = reader.read(texts)
        again = reader.read(texts)
        assert reader._ctx.n_batch == 512
        both = reader.read([long_text, texts[0]])
        # The batch needs only the part after the shared prefix, the context all of it.
        assert reader._ctx.n_batch > 512
        assert reader._ctx.n_ctx >= len(reader.encode(long_text))
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(first, again)
    # Batched with other rows, llama.cpp's matmuls are not bit-exact on this
    # model, so the row read next to a long prompt is compared by direction.
    cosine = both[1] @ first[0] / (np.linalg.norm(both[1]) * np.linalg.norm(first[0]))
    assert cosine > 0.999


def test_instruction_end_index_points_at_text(smollm):
    template = template_for(smollm)
    text = "Describe the water cycle"
    tokens = encode_messages(smollm, template, [{"role": "user", "content": text}])
    index = instruction_end_index(smollm, template, text)
    assert smollm.detokenize(tokens[:index + 1]).endswith("cycle")
    assert index < len(tokens) - 1


def test_interrupted_run_resumes(smollm, tmp_path):
    out = tmp_path / "acts"
    seen = []

    def stop_after_first(n):
        seen.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_activations(smollm, PROMPTS, out, layers=[7], batch_prompts=2, n_threads=2,
                            on_progress=stop_after_first)
    assert ActivationStore(out).done.sum() == 2
    resumed = []
    store = extract_activations(smollm, PROMPTS, out, layers=[7], batch_prompts=2,
                                n_threads=2, on_progress=resumed.append)
    assert sum(resumed) == 3
    assert store.done.all()
    fresh = extract_activations(smollm, PROMPTS, tmp_path / "fresh", layers=[7],
                                batch_prompts=2, n_threads=2)
    np.testing.assert_array_equal(store.features(7)[0], fresh.features(7)[0])


def test_resume_with_other_prompts_fails(smollm, tmp_path):
    extract_activations(smollm, PROMPTS[:2], tmp_path / "acts", layers=[7], n_threads=2)
    with pytest.raises(ValueError, match="other prompts"):
        extract_activations(smollm, PROMPTS[:3], tmp_path / "acts", layers=[7], n_threads=2)


def test_bad_arguments(smollm, tmp_path):
    with pytest.raises(ValueError, match="last block"):
        extract_activations(smollm, PROMPTS, tmp_path / "a", layers=[smollm.n_layer - 1])
    with pytest.raises(ValueError, match="unknown positions"):
        extract_activations(smollm, PROMPTS, tmp_path / "b", positions=("t_mid",))
    with pytest.raises(ValueError, match="no prompts"):
        extract_activations(smollm, [], tmp_path / "c")


def test_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="lrgate extract"):
        ActivationStore(tmp_path)


def test_data_root_exists():
    assert (data_root() / "polyrefuse").is_dir()
