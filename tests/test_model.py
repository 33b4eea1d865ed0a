"""Loading models: real files, and missing, truncated or foreign ones."""

from pathlib import Path

import pytest

from lrgate_cpp.model import Model, ModelError
from lrgate_cpp.template import ChatTemplate, TemplateError, encode_messages, template_for
from lrgate_cpp.zoo import resolve_model_path


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Model(tmp_path / "absent.gguf")


def test_directory(tmp_path):
    with pytest.raises(ModelError, match="directory"):
        Model(tmp_path)


def test_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("this is a text file, not a model\n")
    with pytest.raises(ModelError, match="not a GGUF file"):
        Model(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="not a GGUF file"):
        Model(path)


@pytest.mark.model
def test_truncated_file(tmp_path):
    source = resolve_model_path("smollm2-135m")
    path = tmp_path / "truncated.gguf"
    with source.open("rb") as stream:
        path.write_bytes(stream.read(source.stat().st_size // 3))
    with pytest.raises(ModelError, match="could not load"):
        Model(path)


@pytest.mark.model
def test_truncated_header(tmp_path):
    source = resolve_model_path("smollm2-135m")
    path = tmp_path / "header.gguf"
    with source.open("rb") as stream:
        path.write_bytes(stream.read(4096))
    with pytest.raises(ModelError, match="could not load"):
        Model(path)


@pytest.mark.model
def test_metadata_of_real_models(any_model):
    assert any_model.architecture in ("llama", "qwen2", "gemma3")
    assert any_model.n_embd in (576, 896, 640)
    fingerprint = any_model.fingerprint()
    assert fingerprint.n_layer == any_model.n_layer
    assert len(fingerprint.tokenizer) == 16
    assert fingerprint.matches(any_model.fingerprint())


@pytest.mark.model
def test_fingerprints_differ_between_models():
    a = Model(resolve_model_path("smollm2-135m")).fingerprint()
    b = Model(resolve_model_path("qwen2.5-coder-0.5b")).fingerprint()
    assert not a.matches(b)


@pytest.mark.model
def test_qwen_template_keeps_default_system_prompt():
    model = Model(resolve_model_path("qwen2.5-coder-0.5b"))
    text = template_for(model).render([{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nYou are Qwen")
    assert text.endswith("<|im_start|>assistant\n")
    tokens = encode_messages(model, template_for(model), [{"role": "user", "content": "Hi"}])
    assert tokens[0] == model.tokenize("<|im_start|>")[0]


@pytest.mark.model
def test_gemma_gets_one_bos():
    model = Model(resolve_model_path("gemma3-270m"))
    tokens = encode_messages(model, template_for(model), [{"role": "user", "content": "Hi"}])
    assert tokens[0] == model.bos_token
    assert tokens.count(model.bos_token) == 1


def test_template_rejects_unknown_role():
    template = ChatTemplate(None)
    with pytest.raises(TemplateError, match="role"):
        template.render([{"role": "robot", "content": "x"}])


def test_template_syntax_error():
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate("{% for m in messages %}")


def test_unknown_short_name():
    with pytest.raises(FileNotFoundError, match="qwen2.5-coder-0.5b"):
        resolve_model_path("no-such-model")


def test_known_model_paths_exist():
    assert Path(resolve_model_path("smollm2-135m")).exists()


@pytest.mark.model
def test_bundle_passed_as_model():
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"
    with pytest.raises(ModelError, match="gate bundle, not a model"):
        Model(bundle)
