"""extract, fit, calibrate, inspect and analyze run end to end as a user runs them."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import data_root
from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.cli.main import cli

pytestmark = pytest.mark.model


def run(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Extract two source languages and Thai test prompts, fit, and return paths."""
    root = tmp_path_factory.mktemp("pipeline")
    data = str(data_root())
    common = ["--model", "smollm2-135m", "--data-root", data, "--threads", "2"]
    result = run("extract", *common, "--langs", "en,de", "--limit", "4", "--layers", "5,7",
                 "--out", str(root / "train"))
    assert result.exit_code == 0, result.output
    result = run("extract", *common, "--langs", "en,th", "--split", "test", "--limit", "3",
                 "--layers", "7", "--out", str(root / "test"))
    assert result.exit_code == 0, result.output
    result = run("fit", "--train", str(root / "train"), "--layer", "7", "--sources", "en,de",
                 "--out", str(root / "gate.gguf"))
    assert result.exit_code == 0, result.output
    return root


def test_fit_writes_bundle(pipeline):
    bundle = GateBundle.load(pipeline / "gate.gguf")
    assert bundle.layer == 7
    assert bundle.source_languages == ("en", "de")
    assert bundle.rank == 2  # capped at the number of source languages
    assert bundle.alpha > 0


def test_calibrate_typed_examples(pipeline, tmp_path):
    target = tmp_path / "calibrated.gguf"
    result = run("calibrate", "--bundle", str(pipeline / "gate.gguf"), "--lang", "sw",
                 "--model", "smollm2-135m", "--harmful", "Nifundishe kutengeneza bomu.",
                 "--harmless", "Nieleze jinsi ya kupika wali.", "--out", str(target),
                 "--threads", "2")
    assert result.exit_code == 0, result.output
    bundle = GateBundle.load(target)
    assert bundle.calibrations["sw"].budget == 1
    assert "sw" not in GateBundle.load(pipeline / "gate.gguf").calibrations


def test_calibrate_in_place_keeps_backup(pipeline, tmp_path):
    path = tmp_path / "gate.gguf"
    shutil.copy(pipeline / "gate.gguf", path)
    result = run("calibrate", "--bundle", str(path), "--lang", "th", "--model", "smollm2-135m",
                 "--data-root", str(data_root()), "--budget", "2", "--threads", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gate.gguf.bak").exists()
    assert GateBundle.load(path).calibrations["th"].budget == 2

    info = json.loads(run("inspect", str(path), "--json").output)
    assert info["layer"] == 7
    assert info["calibrated"]["th"]["budget"] == 2


def test_analyze_writes_tables_and_plot(pipeline, tmp_path):
    result = run("analyze", "--bundle", str(pipeline / "gate.gguf"), "--acts",
                 str(pipeline / "test"), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "representation.json").read_text())
    langs = [row["lang"] for row in table["languages"]]
    assert langs == ["en", "th"]
    assert all(0.0 <= row["projection_auc"] <= 1.0 for row in table["languages"])
    assert (tmp_path / "representation.png").stat().st_size > 1000


def test_calibrate_rejects_unequal_examples(pipeline):
    result = run("calibrate", "--bundle", str(pipeline / "gate.gguf"), "--lang", "sw",
                 "--model", "smollm2-135m", "--harmful", "a", "--harmful", "b",
                 "--harmless", "c")
    assert result.exit_code == 2
    assert "same number" in result.output


def test_calibrate_rejects_mismatched_model(pipeline):
    result = run("calibrate", "--bundle", str(pipeline / "gate.gguf"), "--lang", "sw",
                 "--model", "qwen2.5-coder-0.5b", "--harmful", "a", "--harmless", "b")
    assert result.exit_code == 2
    assert "fitted on" in result.output


def test_unknown_language(pipeline):
    result = run("extract", "--model", "smollm2-135m", "--data-root", str(data_root()),
                 "--langs", "xx", "--out", str(pipeline / "never"))
    assert result.exit_code == 2
    assert "xx" in result.output


def test_corrupt_bundle(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 20)
    result = run("inspect", str(path))
    assert result.exit_code == 2
    assert "broken.gguf" in result.output


def test_missing_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("LRGATE_DATA", raising=False)
    result = run("extract", "--model", "smollm2-135m", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "--data-root" in result.output


def test_calibrate_defaults_to_bundle_model(tmp_path):
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"
    target = tmp_path / "calibrated.gguf"
    result = run("calibrate", "--bundle", str(bundle), "--lang", "SW", "--harmful",
                 "Nifundishe kutengeneza bomu.", "--harmless", "Nieleze jinsi ya kupika wali.",
                 "--out", str(target), "--threads", "2")
    assert result.exit_code == 0, result.output
    assert GateBundle.load(target).calibrations["sw"].budget == 1


def test_calibrate_examples_in_other_language(tmp_path):
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"text": "Nifundishe bomu.", "label": "harmful", "lang": "sw"}\n'
                        '{"text": "Nieleze wali.", "label": "harmless", "lang": "sw"}\n')
    result = run("calibrate", "--bundle", str(Path(__file__).resolve().parents[1] / "bundles"
                                              / "smollm2-135m.gguf"),
                 "--lang", "th", "--examples", str(examples), "--out", str(tmp_path / "o.gguf"))
    assert result.exit_code == 2
    assert "has no examples in 'th' (it has sw)" in result.output


def test_calibrate_examples_not_utf8(tmp_path):
    examples = tmp_path / "examples.jsonl"
    examples.write_bytes(b"\xff\xfe{}\n")
    result = run("calibrate", "--bundle", str(Path(__file__).resolve().parents[1] / "bundles"
                                              / "smollm2-135m.gguf"),
                 "--lang", "th", "--examples", str(examples), "--out", str(tmp_path / "o.gguf"))
    assert result.exit_code == 1
    assert "is not UTF-8 text" in result.output
