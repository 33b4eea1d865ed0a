"""Tests of the multiple-choice utility check: loaders, letter scoring, runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.cli.main import cli
from lrgate_cpp.methods import TargetExamples, build_method
from lrgate_cpp.runtime import Context
from lrgate_cpp.template import encode_messages, template_for
from lrgate_cpp.utility import (
    INSTRUCTION,
    UtilityJob,
    bundle_gate,
    format_question,
    letter_token_ids,
    run_utility,
    score_letters,
)
from lrgate_cpp.utility_data import SIB_CATEGORIES, SIB_CODES, load_mmlu, load_sib200
from lrgate_cpp.utility_report import summarize_utility

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"


# Loaders on the real files -------------------------------------------------


def test_mmlu_english_first_rows(data_dir: Path) -> None:
    questions = load_mmlu(data_dir, "virology", "en", limit=3)
    assert len(questions) == 3
    assert questions[0].text == "How many human polyomaviruses are known at present?"
    assert questions[0].options == ("100", "1", "10", "unknown")
    assert questions[0].answer == 0
    assert questions[1].answer == 3
    assert [q.index for q in questions] == [0, 1, 2]


def test_mmlu_amharic_parallel_answers(data_dir: Path) -> None:
    english = load_mmlu(data_dir, "clinical_knowledge", "en", limit=20)
    amharic = load_mmlu(data_dir, "clinical_knowledge", "am", limit=20)
    assert [q.answer for q in amharic] == [q.answer for q in english]
    assert amharic[0].text != english[0].text


def test_sib200_round_robin_topics(data_dir: Path) -> None:
    questions = load_sib200(data_dir, "en", limit=9)
    assert [q.answer for q in questions] == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert all(q.options == SIB_CATEGORIES for q in questions)


def test_sib200_every_language_loads(data_dir: Path) -> None:
    english = load_sib200(data_dir, "en", limit=7)
    for lang in SIB_CODES:
        questions = load_sib200(data_dir, lang, limit=7)
        assert [q.answer for q in questions] == [q.answer for q in english], lang


def test_mmlu_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="virology_test_am.csv"):
        load_mmlu(tmp_path, "virology", "am")


def test_mmlu_bad_row_named(tmp_path: Path) -> None:
    path = tmp_path / "virology_test.csv"
    path.write_text("question,a,b,c,D\n", encoding="utf-8")
    with pytest.raises(ValueError, match="virology_test.csv: row 1 has 5 columns"):
        load_mmlu(tmp_path, "virology", "en")


def test_mmlu_bad_answer_letter(tmp_path: Path) -> None:
    path = tmp_path / "virology_test.csv"
    path.write_text("question,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(ValueError, match="answer 'E'"):
        load_mmlu(tmp_path, "virology", "en")


def test_sib200_bad_header_named(tmp_path: Path) -> None:
    folder = tmp_path / "sib200" / "eng_Latn"
    folder.mkdir(parents=True)
    (folder / "test.tsv").write_text("id\ttopic\tsentence\n", encoding="utf-8")
    with pytest.raises(ValueError, match="eng_Latn/test.tsv: header"):
        load_sib200(tmp_path, "en")


def test_sib200_unknown_language() -> None:
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        load_sib200("/nonexistent", "xx")


# Prompt and scoring ----------------------------------------------------------


def test_format_question_letters(data_dir: Path) -> None:
    text = format_question(load_sib200(data_dir, "en", limit=1)[0])
    assert text.startswith("Which topic is this sentence about?")
    assert "\nA. science/technology\n" in text
    assert "\nG. geography\n" in text
    assert text.endswith(INSTRUCTION)


def test_score_letters_sums_spellings() -> None:
    logits = np.full(8, -10.0, dtype=np.float32)
    logits[[1, 2]] = 1.0  # option A, spelled two ways
    logits[3] = 1.5  # option B, one spelling
    logits[4] = 0.0  # option C
    scores = score_letters(logits, [[1, 2], [3], [4]])
    # A: log(e^1 + e^1) = 1 + log 2 beats B's 1.5, though B has the largest single logit.
    np.testing.assert_allclose(scores, [1.0 + np.log(2.0), 1.5, 0.0], rtol=1e-6)
    assert int(np.argmax(scores)) == 0


# Runs on SmolLM2 -------------------------------------------------------------


@pytest.mark.model
def test_letter_tokens_smollm(smollm) -> None:
    ids = letter_token_ids(smollm, 4)
    for letter, variants in zip("ABCD", ids):
        assert 1 <= len(variants) <= 2
        for token in variants:
            assert smollm.detokenize([token]).strip() == letter


@pytest.mark.model
def test_run_utility_gated_and_resumed(smollm, data_dir: Path, tmp_path: Path) -> None:
    bundle = GateBundle.load(BUNDLE)
    questions = load_mmlu(data_dir, "virology", "en", limit=2) + load_sib200(data_dir, "th", 2)
    conditions = {"none": build_method("none", 0, bundle, ["en", "th"], TargetExamples()),
                  "gate": bundle_gate(bundle, ["en", "th"])}
    job = UtilityJob(questions, batch=4, n_threads=1)
    records = run_utility(smollm, conditions, job, tmp_path)
    assert len(records) == 8
    assert {r["route"] for r in records if r["condition"] == "none"} == {"none"}
    assert {r["route"] for r in records if r["condition"] == "gate"} <= {"harmful", "harmless"}
    assert all(len(r["scores"]) == len(questions[0].options) for r in records[:2])

    # The unbatched, unhooked logits of the first question give the same scores.
    with Context(smollm, n_ctx=512, n_threads=1, hook=False) as ctx:
        prompt = format_question(questions[0])
        ctx.prefill({0: encode_messages(smollm, template_for(smollm),
                                        [{"role": "user", "content": prompt}])})
        expected = score_letters(ctx.logits(0), letter_token_ids(smollm, 4))
    np.testing.assert_allclose(records[0]["scores"], expected, atol=0.05)

    lines = (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    again = run_utility(smollm, conditions, job, tmp_path)
    assert len(again) == 8
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == len(lines)

    rows = summarize_utility(again)
    sib = {(r["condition"], r["group"]): r for r in rows if r["dataset"] == "sib200"}
    assert sib[("none", "th")]["n"] == 2
    assert sib[("gate", "th")]["routed_harmful"] in (0.0, 50.0, 100.0)


@pytest.mark.model
def test_bundle_gate_uses_calibration() -> None:
    bundle = GateBundle.load(BUNDLE)
    calibrated = next(iter(bundle.calibrations))
    setup = bundle_gate(bundle, ["en", calibrated])
    assert set(setup.per_language) == {calibrated}
    assert setup.per_language[calibrated][1] == bundle.calibrations[calibrated].threshold


@pytest.mark.model
def test_cli_utility_writes_report(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "utility", "--model", "smollm2-135m", "--bundle", str(BUNDLE),
        "--data-root", str(data_dir), "--mmlu-langs", "am", "--mmlu-subjects", "virology",
        "--mmlu-limit", "1", "--sib-langs", "en", "--sib-limit", "1", "--threads", "1",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "utility.json").read_text(encoding="utf-8"))
    groups = {(r["condition"], r["dataset"], r["group"]) for r in summary["rows"]}
    assert ("gate", "mmlu", "am") in groups
    assert ("none", "sib200", "en") in groups
    assert "| group | n | accuracy (none) |" in (tmp_path / "utility.md").read_text()


def test_cli_utility_rejects_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["utility", "--bundle", str(BUNDLE), "--datasets", "gsm8k",
                                      "--data-root", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown gsm8k" in result.output
