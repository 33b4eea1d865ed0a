"""Every evaluation method end to end on SmolLM2, and resuming a run."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import data_root
from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.data import load_split
from lrgate_cpp.evaluate import (
    EvalJob,
    RunSettingsError,
    append_records,
    check_run_settings,
    collect_target_examples,
    count_finished,
    load_completions,
    open_records,
    run_eval,
)
from lrgate_cpp.extract import extract_activations
from lrgate_cpp.hook import Route
from lrgate_cpp.methods import METHODS, build_method
from lrgate_cpp.report import write_report
from lrgate_cpp.sources import load_language

pytestmark = pytest.mark.model

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"


@pytest.fixture(scope="module")
def setting(tmp_path_factory, smollm):
    root = tmp_path_factory.mktemp("eval")
    bundle = GateBundle.load(BUNDLE)
    polyrefuse = data_root() / "polyrefuse"
    train_prompts = [p for lang in ("en", "de") for p in load_split(polyrefuse, lang, "train", 3)]
    val_prompts = [p for lang in ("en", "de") for p in load_split(polyrefuse, lang, "val", 2)]
    train = extract_activations(smollm, train_prompts, root / "train", layers=[bundle.layer],
                                n_threads=2)
    val = extract_activations(smollm, val_prompts, root / "val", layers=[bundle.layer],
                              n_threads=2)
    examples = {"th": load_language(data_root(), "th", "val", 2)}
    target = collect_target_examples(smollm, bundle.layer, examples, n_threads=2)
    prompts = load_language(data_root(), "en", "test", 2) + load_language(data_root(), "th",
                                                                           "test", 2)
    return {"root": root, "bundle": bundle, "train": train, "val": val, "target": target,
            "prompts": prompts}


def _judge(replies):
    # A deterministic stand-in judge keeps this test about the runner; the
    # refusal judges have their own tests.
    return [len(reply) % 2 == 0 for reply in replies]


@pytest.mark.parametrize("name", METHODS)
def test_method_runs(smollm, setting, name, tmp_path):
    budget = 2 if name in ("gate", "cast-adapted", "adasteer-adapted") else 0
    method = build_method(name, budget, setting["bundle"], ["en", "th"], setting["target"],
                          setting["train"], setting["val"])
    records = run_eval(smollm, [method], EvalJob(setting["prompts"], 8, 4, 2), tmp_path, _judge)
    assert len(records) == 8
    assert {r["lang"] for r in records} == {"en", "th"}
    assert all(r["method"] == method.label for r in records)
    if name in ("gate", "cast", "cast-adapted", "adasteer", "adasteer-adapted"):
        assert all(r["route"] in ("harmful", "harmless") for r in records)
        assert all(isinstance(r["logit"], float) for r in records)
    if name.startswith("adasteer"):
        # Every prompt takes the steering route; the coefficient selects.
        assert all(r["route"] == Route.HARMFUL.name.lower() for r in records)


def test_gate_budget_changes_thai_readout(setting):
    zero = build_method("gate", 0, setting["bundle"], ["th"], setting["target"])
    two = build_method("gate", 2, setting["bundle"], ["th"], setting["target"])
    assert "th" not in zero.per_language
    readout, threshold = two.per_language["th"]
    assert readout is not None
    assert np.isfinite(threshold)


def test_cast_needs_activations(setting):
    with pytest.raises(ValueError, match="--train-acts"):
        build_method("cast", 0, setting["bundle"], ["th"], setting["target"])


def test_resume_skips_finished_cells(smollm, setting, tmp_path):
    method = build_method("none", 0, setting["bundle"], ["en", "th"], setting["target"])
    job = EvalJob(setting["prompts"], 6, 4, 2)
    calls = []

    def counting_judge(replies):
        calls.append(len(replies))
        return _judge(replies)

    first = run_eval(smollm, [method], job, tmp_path, counting_judge)
    lines = (tmp_path / "completions.jsonl").read_text().splitlines()
    # Drop the last record and damage the file's tail as a crash would.
    (tmp_path / "completions.jsonl").write_text("\n".join(lines[:-1]) + "\n{\"method\": ")
    calls.clear()
    second = run_eval(smollm, [method], job, tmp_path, counting_judge)
    assert sum(calls) == 1
    assert len(second) == len(first)
    assert len(load_completions(tmp_path / "completions.jsonl")) == len(first)


def test_report_files(setting, tmp_path):
    records = [
        {"method": "none", "lang": "en", "label": "harmful", "index": 0, "refused": True},
        {"method": "none", "lang": "en", "label": "harmless", "index": 0, "refused": False},
        {"method": "none", "lang": "th", "label": "harmful", "index": 0, "refused": False},
        {"method": "none", "lang": "th", "label": "harmless", "index": 0, "refused": False},
    ]
    paths = write_report(records, tmp_path, "test judge")
    summary = json.loads((tmp_path / "summary.json").read_text())
    en = next(r for r in summary["languages"] if r["group"] == "en")
    assert en["delta"] == pytest.approx(100.0)
    assert [r["group"] for r in summary["tiers"]] == ["high", "mid"]
    (mean,) = summary["means"]
    assert mean["languages"] == ["en", "th"]
    assert mean["delta"] == pytest.approx(50.0)  # en 100, th 0
    assert "| none | 2 | 50.0 | 0.0 | 50.0 |" in (tmp_path / "summary.md").read_text()
    assert {p.name for p in paths} >= {"summary.md", "refusal_by_tier.png"}


def test_run_settings_record_then_check(tmp_path):
    settings = {"model": "m", "split": "test", "max_tokens": 40}
    check_run_settings(tmp_path, settings)
    assert json.loads((tmp_path / "run.json").read_text()) == settings
    check_run_settings(tmp_path, dict(settings))
    with pytest.raises(RunSettingsError, match="max_tokens: folder has 40, this command 48"):
        check_run_settings(tmp_path, {**settings, "max_tokens": 48})


def test_run_settings_check_only(tmp_path):
    settings = {"model": "m", "max_tokens": 40}
    check_run_settings(tmp_path / "new", settings, record=False)
    assert not (tmp_path / "new").exists()
    check_run_settings(tmp_path, settings)
    with pytest.raises(RunSettingsError, match="max_tokens: folder has 40, this command 48"):
        check_run_settings(tmp_path, {**settings, "max_tokens": 48}, record=False)


def test_count_finished_requested_cells_only(setting):
    prompts = setting["prompts"]
    records = [{"method": "none", "lang": p.lang, "label": p.label, "index": 0} for p in prompts]
    records.append({"method": "gate@b0", "lang": "en", "label": "harmful", "index": 0})
    # Two prompts per (language, label) cell, so index 0 covers half of them.
    assert count_finished(records, ["none"], prompts) == len(prompts) // 2
    assert count_finished(records, ["none", "gate@b4"], prompts) == len(prompts) // 2
    assert count_finished(records, ["gate@b0"], prompts) == 1


def test_cli_rejects_mismatched_folder(tmp_path):
    from click.testing import CliRunner

    from lrgate_cpp.cli.main import cli

    args = ["eval", "--model", "smollm2-135m", "--bundle", str(BUNDLE), "--data-root",
            str(data_root()), "--langs", "en", "--limit", "1", "--methods", "none",
            "--threads", "2", "--out", str(tmp_path)]
    first = CliRunner().invoke(cli, [*args, "--max-tokens", "2"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(cli, [*args, "--max-tokens", "3"])
    assert second.exit_code == 1
    assert "max_tokens: folder has 2, this command 3" in second.output
    assert len(load_completions(tmp_path / "completions.jsonl")) == 2


@pytest.mark.parametrize("tail", ['{"method": ', '{"method": "none", "index": 1}'])
def test_open_records_repairs_cut_tail(tmp_path, tail):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"method": "none", "index": 0}\n' + tail, encoding="utf-8")
    records = open_records(path)
    with path.open("a", encoding="utf-8") as sink:
        append_records(sink, [{"method": "gate", "index": 2}])
    reread = load_completions(path)
    assert [r["index"] for r in reread] == [r["index"] for r in records] + [2]
    assert path.read_text(encoding="utf-8").endswith("\n")
