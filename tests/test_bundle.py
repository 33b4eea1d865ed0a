import warnings

import gguf
import numpy as np
import pytest

import lrgate_cpp.bundle as bundle_module
import lrgate_cpp.bundle_format as bundle_format
from lrgate_cpp.bundle import (
    BundleError,
    GateBundle,
    ModelFingerprint,
    ModelMismatchError,
    UncalibratedLanguageWarning,
)
from lrgate_cpp.fitting import calibrate_language, fit_gate

N_EMBD = 16
MODEL = ModelFingerprint("qwen2", N_EMBD, 6, "sha256:tok-a", "tiny-qwen.gguf")


@pytest.fixture(scope="module")
def bundle():
    rng = np.random.default_rng(0)
    planted = rng.normal(size=N_EMBD)
    planted /= np.linalg.norm(planted)
    features, labels, langs = [], [], []
    for code in ("en", "de", "fr"):
        offset = 0.3 * rng.normal(size=N_EMBD)
        for label in (1, 0):
            features.append(offset + rng.normal(size=(30, N_EMBD)) + 3.0 * label * planted)
            labels += [label] * 30
            langs += [code] * 30
    fit = fit_gate(np.vstack(features).astype(np.float32), np.array(labels), langs, rank=3)
    result = GateBundle.from_fit(fit, MODEL, layer=4)
    for code, budget in (("sw", 1), ("yo", 2)):
        harmful = rng.normal(size=(budget, N_EMBD)) + 3.0 * planted
        harmless = rng.normal(size=(budget, N_EMBD))
        examples = np.vstack([harmful, harmless]).astype(np.float32)
        result.add_calibration(calibrate_language(
            code, examples, np.array([1] * budget + [0] * budget), basis_t=result.basis_t,
            train_z=result.train_z, train_labels=result.train_labels, C=result.C,
        ))
    return result


@pytest.fixture()
def saved(bundle, tmp_path):
    path = tmp_path / "gate.gguf"
    bundle.save(path)
    return path


def assert_gates_identical(left, right):
    assert left.threshold == right.threshold
    assert left.budget == right.budget
    assert left.fit_score == right.fit_score
    for name in ("mean", "scale", "weight"):
        assert getattr(left, name).dtype == np.float32
        assert getattr(left, name).tobytes() == getattr(right, name).tobytes(), name
    assert type(right.bias) is np.float32
    assert left.bias.tobytes() == right.bias.tobytes()


def test_round_trip_bit_exact(bundle, saved):
    loaded = GateBundle.load(saved)
    assert loaded.model == MODEL
    for name in ("layer", "position", "lam", "alpha", "C", "source_languages", "rank"):
        assert getattr(loaded, name) == getattr(bundle, name), name
    for name in ("basis_t", "v_hrl", "train_z", "train_labels"):
        original, copy = getattr(bundle, name), getattr(loaded, name)
        assert copy.dtype == original.dtype, name
        assert copy.shape == original.shape, name
        assert copy.tobytes() == original.tobytes(), name
    assert_gates_identical(bundle.default, loaded.default)
    assert list(loaded.calibrations) == ["sw", "yo"]
    for code in ("sw", "yo"):
        assert_gates_identical(bundle.calibrations[code], loaded.calibrations[code])


def test_resave_gives_identical_bytes(saved, tmp_path):
    again = tmp_path / "again.gguf"
    GateBundle.load(saved).save(again)
    assert again.read_bytes() == saved.read_bytes()


def test_file_is_gguf_with_lrgate_keys(saved):
    reader = gguf.GGUFReader(saved)
    assert reader.fields["general.architecture"].contents() == "lrgate"
    assert reader.fields["lrgate.format_version"].contents() == 1
    assert reader.fields["lrgate.lang.sw.budget"].contents() == 1
    names = {tensor.name for tensor in reader.tensors}
    assert {"basis_t", "v_hrl", "readout.weight", "lang.yo.bias", "train_z"} <= names


def test_calibrated_readouts_differ_in_weights(bundle):
    assert bundle.calibrations["sw"].budget == 1
    assert bundle.calibrations["yo"].budget == 2
    assert not np.array_equal(bundle.calibrations["sw"].weight, bundle.default.weight)


def test_make_readout_uses_language_gate(bundle):
    readout, threshold = bundle.make_readout("sw")
    assert threshold == bundle.calibrations["sw"].threshold
    assert np.array_equal(readout.coef_, bundle.calibrations["sw"].weight)
    assert np.array_equal(readout.basis_t_, bundle.basis_t)


def test_uncalibrated_language_warns_and_falls_back(bundle):
    with pytest.warns(UncalibratedLanguageWarning, match="'am' is not calibrated"):
        readout, threshold = bundle.make_readout("am")
    assert threshold == bundle.default.threshold
    assert np.array_equal(readout.coef_, bundle.default.weight)


def test_source_language_uses_default_silently(bundle):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gate = bundle.select_gate("de")
    assert gate is bundle.default


def test_select_gate_unknown_language(bundle):
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        bundle.select_gate("xx")


def test_check_model_accepts_same_model(bundle):
    bundle.check_model(ModelFingerprint("qwen2", N_EMBD, 6, "sha256:tok-a", "renamed.gguf"))


@pytest.mark.parametrize(
    ("other", "field"),
    [
        (ModelFingerprint("llama", N_EMBD, 6, "sha256:tok-a", "other.gguf"), "architecture"),
        (ModelFingerprint("qwen2", 32, 6, "sha256:tok-a", "other.gguf"), "n_embd"),
        (ModelFingerprint("qwen2", N_EMBD, 6, "sha256:tok-b", "other.gguf"), "tokenizer"),
    ],
)
def test_check_model_mismatch_names_both(bundle, other, field):
    with pytest.raises(ModelMismatchError) as info:
        bundle.check_model(other)
    message = str(info.value)
    assert "tiny-qwen.gguf" in message
    assert "other.gguf" in message
    assert f"differ in {field}" in message


def test_load_missing_file(tmp_path):
    with pytest.raises(BundleError, match="none.gguf not found"):
        GateBundle.load(tmp_path / "none.gguf")


def test_load_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("this is not a GGUF file\n")
    with pytest.raises(BundleError, match="notes.gguf is not a readable GGUF file"):
        GateBundle.load(path)


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(BundleError, match="empty.gguf"):
        GateBundle.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_load_truncated(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BundleError, match="gate.gguf"):
        GateBundle.load(saved)


def test_load_flipped_tensor_byte(saved):
    reader = gguf.GGUFReader(saved)
    offset = next(t.data_offset for t in reader.tensors if t.name == "readout.weight")
    del reader
    data = bytearray(saved.read_bytes())
    data[offset + 1] ^= 0x40
    saved.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="gate.gguf is corrupt"):
        GateBundle.load(saved)


def test_load_other_format_version(bundle, tmp_path, monkeypatch):
    path = tmp_path / "future.gguf"
    monkeypatch.setattr(bundle_format, "FORMAT_VERSION", 2)
    bundle.save(path)
    monkeypatch.undo()
    with pytest.raises(BundleError, match="format version 2, but this lrgate reads version 1"):
        GateBundle.load(path)


def test_load_model_file(tmp_path):
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(BundleError, match="not a gate bundle.*'llama'"):
        GateBundle.load(path)


def test_bundle_error_is_value_error():
    assert issubclass(BundleError, ValueError)


def test_failed_save_keeps_old_file(bundle, saved, monkeypatch):
    before = saved.read_bytes()

    def write_half_then_fail(path, metadata, tensors):
        path.write_bytes(b"GGUF partial")
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "write_gguf", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        bundle.save(saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["gate.gguf"]


def test_save_rejects_invalid_bundle(bundle, tmp_path):
    broken = GateBundle(**{**bundle.__dict__, "v_hrl": bundle.v_hrl[:-1]})
    with pytest.raises(ValueError, match=rf"v_hrl must be float32 of shape \({N_EMBD},\)"):
        broken.save(tmp_path / "broken.gguf")
    assert not (tmp_path / "broken.gguf").exists()


def test_from_fit_rejects_layer_out_of_range(bundle):
    broken = GateBundle(**{**bundle.__dict__, "layer": 6})
    with pytest.raises(ValueError, match=r"layer 6 is outside the model's 0..5"):
        broken.validate()


def test_add_calibration_rejects_other_basis(bundle):
    rng = np.random.default_rng(5)
    other_basis = np.linalg.qr(rng.normal(size=(N_EMBD, bundle.rank)))[0].T.astype(np.float32)
    examples = rng.normal(size=(2, N_EMBD)).astype(np.float32)
    calibration = calibrate_language(
        "km", examples, np.array([1, 0]), basis_t=other_basis, train_z=bundle.train_z,
        train_labels=bundle.train_labels,
    )
    with pytest.raises(ValueError, match="uses another basis"):
        bundle.add_calibration(calibration)
    assert "km" not in bundle.calibrations
