"""Refusal metrics and bootstrap intervals on hand-made judgments."""

import math

import numpy as np
import pytest

from lrgate_cpp.metrics import bootstrap_interval, summarize_refusals


def test_rates_and_delta():
    summary = summarize_refusals([True, True, True, False], [False, False, True, False, False])
    assert summary.harmful == pytest.approx(75.0)
    assert summary.harmless == pytest.approx(20.0)
    assert summary.delta == pytest.approx(55.0)
    assert summary.n_harmful == 4
    assert summary.n_harmless == 5


def test_intervals_contain_the_rate():
    rng = np.random.default_rng(1)
    harmful = rng.random(200) < 0.8
    harmless = rng.random(200) < 0.1
    summary = summarize_refusals(harmful, harmless)
    assert summary.harmful_ci[0] < summary.harmful < summary.harmful_ci[1]
    assert summary.harmless_ci[0] < summary.harmless < summary.harmless_ci[1]
    assert summary.delta_ci[0] < summary.delta < summary.delta_ci[1]
    # A binomial proportion near 80% over 200 prompts has a 95% interval
    # about +-5.5 points wide.
    width = summary.harmful_ci[1] - summary.harmful_ci[0]
    assert 8.0 < width < 14.0


def test_constant_judgments_give_degenerate_interval():
    assert bootstrap_interval(np.ones(10)) == (100.0, 100.0)
    assert bootstrap_interval(np.zeros(10)) == (0.0, 0.0)


def test_empty_side_gives_nan():
    summary = summarize_refusals([True, False], [])
    assert summary.harmful == pytest.approx(50.0)
    assert math.isnan(summary.harmless)
    assert math.isnan(summary.delta_ci[0])


def test_seed_makes_intervals_repeatable():
    values = np.array([True, False, True, True, False] * 4)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
