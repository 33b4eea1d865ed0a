"""Tests of the layer and lambda sweep on SmolLM2 with a tiny extraction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.cli.main import cli
from lrgate_cpp.extract import ActivationStore, extract_activations
from lrgate_cpp.judge_lexicon import is_refusal_batch
from lrgate_cpp.sources import load_language
from lrgate_cpp.sweep import (
    SweepJob,
    count_finished_work,
    run_sweep,
    scale_bundle,
    setting_folder,
)
from lrgate_cpp.sweep_report import write_sweep_report
from lrgate_cpp.utility_data import load_sib200

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"
LAYERS = [5, 9]


@pytest.fixture(scope="module")
def stores(smollm, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[ActivationStore, ActivationStore]:
    """Train activations of 2 prompts per label in en and de, val of 1 per label in en."""
    root = tmp_path_factory.mktemp("acts")
    train_prompts = (load_language(data_dir, "en", "train", 2)
                     + load_language(data_dir, "de", "train", 2))
    train = extract_activations(smollm, train_prompts, root / "train", LAYERS, n_threads=1)
    val = extract_activations(smollm, load_language(data_dir, "en", "val", 1), root / "val",
                              LAYERS, n_threads=1)
    return train, val


def test_scale_bundle_alpha_proportional() -> None:
    bundle = GateBundle.load(BUNDLE)
    doubled = scale_bundle(bundle, 2 * bundle.lam)
    assert doubled.alpha == pytest.approx(2 * bundle.alpha)
    assert doubled.lam == 2 * bundle.lam
    assert scale_bundle(bundle, 0.0).alpha == 0.0
    assert bundle.alpha == GateBundle.load(BUNDLE).alpha  # the original is unchanged


def test_scale_bundle_rejects_negative() -> None:
    with pytest.raises(ValueError, match="lambda must be >= 0; got -1"):
        scale_bundle(GateBundle.load(BUNDLE), -1.0)


def test_setting_folder_names() -> None:
    assert setting_folder(None, None) == "none"
    assert setting_folder(15, 0.5) == "layer15_lambda0.5"
    assert setting_folder(7, 2.0) == "layer7_lambda2"
    assert setting_folder(7, 2.0, budget=4) == "layer7_lambda2_b4"
    assert setting_folder(None, None, budget=1) == "none_b1"


@pytest.mark.model
def test_run_sweep_rows_and_resume(smollm, stores, data_dir: Path, tmp_path: Path) -> None:
    train, val = stores
    job = SweepJob(LAYERS, [0.5, 1.0], load_language(data_dir, "en", "val", 1),
                   load_sib200(data_dir, "en", 1), max_new_tokens=4, batch=4, n_threads=1)
    rows = run_sweep(smollm, train, val, job, tmp_path, is_refusal_batch)
    assert [(r["layer"], r["lambda"]) for r in rows] == [
        (None, None), (5, 0.5), (5, 1.0), (9, 0.5), (9, 1.0)]
    for layer in LAYERS:
        half, full = (r for r in rows if r["layer"] == layer)
        assert half["alpha"] == pytest.approx(full["alpha"] / 2)
        assert half["val_auc"] == full["val_auc"]
    for row in rows:
        assert row["n_harmful"] == 1
        assert row["n_harmless"] == 1
        assert row["delta"] == row["harmful_refusal"] - row["harmless_refusal"]
        assert row["utility_n"] == 1
    assert rows[0]["routed_harmful_of_harmful"] is None
    assert rows[1]["routed_harmful_of_harmful"] in (0.0, 100.0)

    # Two replies and one answer for each of the five settings.
    assert count_finished_work(tmp_path, job) == 5 * 3
    completions = tmp_path / "layer9_lambda1" / "completions.jsonl"
    before = completions.read_text(encoding="utf-8")
    again = run_sweep(smollm, train, val, job, tmp_path, is_refusal_batch)
    assert completions.read_text(encoding="utf-8") == before
    assert [r["delta"] for r in again] == [r["delta"] for r in rows]

    paths = write_sweep_report(rows, tmp_path)
    assert [p.name for p in paths] == ["sweep.json", "sweep.md", "sweep_delta.png"]
    assert paths[2].stat().st_size > 1000
    assert json.loads(paths[0].read_text())["rows"][2]["lambda"] == 1.0
    assert "| 9 | 1.00 |" in paths[1].read_text()


@pytest.mark.model
def test_run_sweep_budget_recalibrates_target(smollm, stores, data_dir: Path,
                                              tmp_path: Path) -> None:
    train, val = stores
    thai = load_language(data_dir, "th", "val", 3)
    examples = {"th": [p for p in thai if p.label == "harmful"][:2]
                + [p for p in thai if p.label == "harmless"][:2]}
    held_out = [p for p in thai if p not in examples["th"]]
    plain = SweepJob([9], [1.0], held_out, max_new_tokens=2, batch=2, n_threads=1)
    tuned = SweepJob([9], [1.0], held_out, max_new_tokens=2, batch=2, n_threads=1, budget=2,
                     examples=examples)
    run_sweep(smollm, train, val, plain, tmp_path, is_refusal_batch)
    run_sweep(smollm, train, val, tuned, tmp_path, is_refusal_batch)

    def logits(folder: str) -> list[float]:
        lines = (tmp_path / folder / "completions.jsonl").read_text().splitlines()
        return [json.loads(line)["logit"] for line in lines]

    assert (tmp_path / "none_b2" / "completions.jsonl").exists()
    assert len(logits("layer9_lambda1_b2")) == len(held_out) == 2
    # The Thai readout is refitted, so its logits move.
    assert logits("layer9_lambda1_b2") != logits("layer9_lambda1")

    leaky = SweepJob([9], [1.0], thai, budget=2, examples=examples)
    with pytest.raises(ValueError, match="calibration examples are also validation prompts"):
        run_sweep(smollm, train, val, leaky, tmp_path, is_refusal_batch)


@pytest.mark.model
def test_run_sweep_missing_layer(smollm, stores, data_dir: Path, tmp_path: Path) -> None:
    train, val = stores
    job = SweepJob([7], [1.0], load_language(data_dir, "en", "val", 1))
    with pytest.raises(ValueError, match=r"layers \[7\] are not in the train activations"):
        run_sweep(smollm, train, val, job, tmp_path, is_refusal_batch)


@pytest.mark.model
def test_cli_sweep_one_setting(stores, data_dir: Path, tmp_path: Path) -> None:
    train, val = stores
    result = CliRunner().invoke(cli, [
        "sweep", "--model", "smollm2-135m", "--train-acts", str(train.path),
        "--val-acts", str(val.path), "--data-root", str(data_dir), "--layers", "9",
        "--lambdas", "1", "--langs", "en", "--limit", "1", "--max-tokens", "2",
        "--threads", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "at layer 9, lambda 1" in result.output
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert len(rows) == 2
    assert np.isfinite(rows[1]["val_auc"])
