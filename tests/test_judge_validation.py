"""Tests of the judge-validation arithmetic on hand-made labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrgate_cpp.judge_report import format_markdown
from lrgate_cpp.judge_validation import (
    LabelledFile,
    agreement,
    cohen_kappa,
    fit_threshold,
    split_indices,
    stratified_sample,
    validate,
)


def test_kappa_hand_computed() -> None:
    # 10 items: observed agreement 0.8; rates 0.5 and 0.5, so chance 0.5.
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    predictions = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0])
    assert cohen_kappa(labels, predictions) == pytest.approx(0.6)


def test_kappa_matches_sklearn() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    predictions = np.where(rng.random(200) < 0.8, labels, 1 - labels)
    assert cohen_kappa(labels, predictions) == pytest.approx(
        cohen_kappa_score(labels, predictions))


def test_kappa_perfect_and_chance() -> None:
    labels = np.array([0, 1, 0, 1])
    assert cohen_kappa(labels, labels) == pytest.approx(1.0)
    assert cohen_kappa(labels, 1 - labels) == pytest.approx(-1.0)


def test_kappa_undefined_when_constant() -> None:
    ones = np.ones(5, dtype=int)
    assert math.isnan(cohen_kappa(ones, ones))


def test_kappa_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        cohen_kappa(np.array([0, 2]), np.array([0, 1]))


def test_kappa_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="one shape"):
        cohen_kappa(np.array([0, 1, 1]), np.array([0, 1]))


def test_agreement_rates() -> None:
    result = agreement(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert result.n == 4
    assert result.accuracy == pytest.approx(0.75)
    assert result.label_rate == pytest.approx(0.5)
    assert result.predicted_rate == pytest.approx(0.25)
    assert result.kappa == pytest.approx(0.5)


def test_split_halves_disjoint() -> None:
    dev, held = split_indices(7, "dev"), split_indices(7, "heldout")
    assert dev.tolist() == [0, 2, 4, 6]
    assert held.tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="split"):
        split_indices(7, "test")


def test_stratified_sample_caps_each_class() -> None:
    labels = np.array([1] * 20 + [0] * 3)
    sample = stratified_sample(labels, np.arange(23), per_class=5)
    assert (labels[sample] == 1).sum() == 5
    assert (labels[sample] == 0).sum() == 3


def test_fit_threshold_separates() -> None:
    scores = np.array([-2.0, -1.5, -0.4, -0.2, 0.3])
    labels = np.array([0, 0, 1, 1, 1])
    threshold = fit_threshold(scores, labels)
    assert -1.5 < threshold < -0.4


def test_fit_threshold_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        fit_threshold(np.array([0.1, 0.2]), np.array([1, 1]))


class _FixedJudge:
    """A stand-in model judge: refusal when the reply starts with 'No'."""

    threshold = 0.0

    def score(self, requests: list[str], replies: list[str]) -> np.ndarray:
        return np.array([1.0 if r.startswith("No") else -1.0 for r in replies])

    def judge(self, requests: list[str], replies: list[str]) -> list[bool]:
        return [bool(s > self.threshold) for s in self.score(requests, replies)]


def _toy_file() -> LabelledFile:
    replies = ("No way.", "I'm sorry, I can't.", "Sure, here it is.", "Here you go.") * 3
    labels = np.array([1, 1, 0, 0] * 3, dtype=np.int8)
    return LabelledFile(model="org/toy", language="en", requests=("q",) * 12,
                        responses=replies, labels=labels, substring=labels.copy())


def test_validate_rows_and_pooled() -> None:
    judge = _FixedJudge()
    rows = validate([_toy_file()], "heldout", model_judge=judge, per_class=2,
                    calibration_per_class=2)
    assert [r["model"] for r in rows] == ["org/toy", "all"]
    assert rows[0]["lexicon"]["n"] == 6
    assert rows[0]["lexicon"]["accuracy"] == pytest.approx(1.0)
    assert rows[0]["substring_source"]["accuracy"] == pytest.approx(1.0)
    # The threshold is fitted on the even (development) rows, scores -1 and 1.
    assert judge.threshold == pytest.approx(0.0)
    # Held-out refusals read "I'm sorry, I can't.", which the stand-in judge misses.
    assert rows[0]["model_judge_sample"]["n"] == 4
    assert rows[0]["model_judge_sample"]["accuracy"] == pytest.approx(0.5)
    assert rows[1]["model_judge_sample"]["n"] == 4


def test_report_has_one_line_per_row() -> None:
    rows = validate([_toy_file()], "heldout")
    meta = {"n_files": 1, "split": "heldout", "command": "cmd", "wall_time_s": 1.0,
            "machine": "test"}
    page = format_markdown(rows, meta)
    assert page.count("| toy | en |") == 1
    assert "| all | all |" in page
