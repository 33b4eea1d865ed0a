import numpy as np
import pytest

from lrgate_cpp.fitting import (
    MAX_BUDGET,
    calibrate_language,
    choose_threshold,
    compute_alpha,
    compute_direction,
    fit_gate,
    pick_layer,
    score_threshold,
)
from lrgate_cpp.readout import RankCappedWarning

N_EMBD = 32
SOURCES = ("en", "de", "fr", "zh")


def unit(vector):
    return vector / np.linalg.norm(vector)


def make_activations(rng, planted, langs=SOURCES, n_per_class=150, shift=4.0, noise=0.5):
    """Per-language Gaussian clouds: harmful = harmless + shift * planted."""
    features, labels, codes = [], [], []
    for code in langs:
        offset = rng.normal(size=N_EMBD)
        for label in (1, 0):
            rows = offset + noise * rng.normal(size=(n_per_class, N_EMBD)) + label * shift * planted
            features.append(rows)
            labels += [label] * n_per_class
            codes += [code] * n_per_class
    return np.vstack(features).astype(np.float32), np.array(labels), codes


@pytest.fixture(scope="module")
def planted():
    return unit(np.random.default_rng(100).normal(size=N_EMBD))


@pytest.fixture(scope="module")
def gate(planted):
    features, labels, langs = make_activations(np.random.default_rng(101), planted)
    with pytest.warns(RankCappedWarning, match="rank 10 exceeds the 4 directions"):
        fit = fit_gate(features, labels, langs, rank=10)
    return fit, features, labels


def test_compute_direction_recovers_planted(planted):
    rng = np.random.default_rng(1)
    harmless = rng.normal(size=(300, N_EMBD))
    harmful = rng.normal(size=(300, N_EMBD)) + 5.0 * planted
    direction = compute_direction(harmful, harmless)
    assert direction.dtype == np.float32
    assert abs(np.linalg.norm(direction) - 1.0) < 1e-6
    assert float(direction @ planted) > 0.99


def test_compute_direction_zero_norm_raises():
    rows = np.random.default_rng(2).normal(size=(5, N_EMBD))
    with pytest.raises(ValueError, match="direction of 'sw': the harmful and harmless means"):
        compute_direction(rows, rows.copy(), name="direction of 'sw'")


def test_compute_direction_empty_class_raises():
    with pytest.raises(ValueError, match="got 0 harmful and 3 harmless"):
        compute_direction(np.zeros((0, N_EMBD)), np.ones((3, N_EMBD)))


def test_fit_gate_recovers_directions(gate, planted):
    fit, _, _ = gate
    assert fit.source_languages == SOURCES
    assert fit.directions.shape == (4, N_EMBD)
    for code, direction in zip(SOURCES, fit.directions):
        assert float(direction @ planted) > 0.99, code
    assert fit.v_hrl.dtype == np.float32
    assert float(fit.v_hrl @ planted) > 0.99


def test_fit_gate_caps_rank_at_languages(gate):
    fit, features, _ = gate
    assert fit.readout.basis_t_.shape == (4, N_EMBD)
    assert fit.train_z.shape == (len(features), 4)
    assert fit.train_z.dtype == np.float32
    assert fit.train_labels.dtype == np.int8


def test_fit_gate_threshold_scores_train(gate):
    fit, features, labels = gate
    logits = fit.readout.decision_function(features)
    # Per-language offsets overlap the classes a little along the planted direction.
    assert fit.fit_score > 0.98
    assert score_threshold(logits, labels, fit.threshold) == fit.fit_score
    best_f1 = choose_threshold(logits, labels)[1]
    for shifted in (fit.threshold - 0.5, fit.threshold + 0.5):
        predicted = logits >= shifted
        harmful, harmless = labels == 1, labels == 0
        f1_harmful = 2 * np.sum(predicted & harmful) / (np.sum(predicted) + np.sum(harmful))
        f1_harmless = 2 * np.sum(~predicted & harmless) / (np.sum(~predicted) + np.sum(harmless))
        assert (f1_harmful + f1_harmless) / 2 <= best_f1


def test_fit_gate_alpha_from_quantiles(gate):
    fit, features, labels = gate
    projections = features.astype(np.float64) @ fit.v_hrl.astype(np.float64)
    harmful_q75 = np.quantile(projections[labels == 1], 0.75)
    harmless_q25 = np.quantile(projections[labels == 0], 0.25)
    expected = harmful_q75 - harmless_q25
    assert fit.lam == 1.0
    assert fit.alpha == pytest.approx(expected, rel=1e-9)
    assert 3.0 < fit.alpha < 6.0


def test_compute_alpha_scales_with_lambda(gate):
    fit, features, labels = gate
    assert compute_alpha(features, labels, fit.v_hrl, lam=0.5) == pytest.approx(fit.alpha / 2)


def test_fit_gate_leaves_out_other_languages(planted):
    rng = np.random.default_rng(3)
    features, labels, langs = make_activations(
        rng, planted, langs=("en", "de", "sw"), n_per_class=40
    )
    fit = fit_gate(features, labels, langs, rank=2)
    assert fit.source_languages == ("en", "de")
    assert len(fit.train_labels) == 160


def test_fit_gate_explicit_source_missing(planted):
    rng = np.random.default_rng(4)
    features, labels, langs = make_activations(rng, planted, langs=("en",), n_per_class=20)
    with pytest.raises(ValueError, match="source language 'de' has no rows"):
        fit_gate(features, labels, langs, source_languages=("en", "de"))


def test_fit_gate_language_missing_class(planted):
    rng = np.random.default_rng(5)
    features, labels, langs = make_activations(rng, planted, langs=("en", "de"), n_per_class=20)
    keep = ~((np.array(langs) == "de") & (labels == 0))
    with pytest.raises(ValueError, match=r"direction of 'de'.*0 harmless"):
        fit_gate(features[keep], labels[keep], np.array(langs)[keep])


def test_fit_gate_without_high_resource_rows(planted):
    rng = np.random.default_rng(6)
    features, labels, langs = make_activations(rng, planted, langs=("sw",), n_per_class=10)
    with pytest.raises(ValueError, match="no high-resource language"):
        fit_gate(features, labels, langs)


def test_choose_threshold_widest_gap():
    threshold, score = choose_threshold(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    assert threshold == 0.0
    assert score == 1.0


def test_choose_threshold_one_per_class():
    threshold, score = choose_threshold(np.array([3.0, -1.0]), np.array([1, 0]))
    assert threshold == 1.0
    assert score == 1.0


def test_choose_threshold_ties_prefer_near_zero():
    # Thresholds 0.5 and 2.5 both give balanced F1 (0.8 + 2/3) / 2 = 11/15.
    threshold, score = choose_threshold(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 1, 0, 1]))
    assert threshold == 0.5
    assert score == pytest.approx(11 / 15)


def test_choose_threshold_ties_prefer_wide_gap():
    # 0.5 (gap 0..1) and 3.5 (gap 2..5) tie at 11/15; 3.5 sits in the wider gap.
    threshold, score = choose_threshold(np.array([0.0, 1.0, 2.0, 5.0]), np.array([0, 1, 0, 1]))
    assert threshold == 3.5
    assert score == pytest.approx(11 / 15)


def test_choose_threshold_all_one_side():
    # Harmful below harmless: predicting everything harmless or harmful scores 1/3.
    threshold, score = choose_threshold(np.array([-1.0, 3.0]), np.array([1, 0]))
    assert score == pytest.approx(1 / 3)
    assert threshold in (-2.0, 4.0)


def test_choose_threshold_rejects_nan():
    with pytest.raises(ValueError, match="NaN or inf"):
        choose_threshold(np.array([np.nan, 1.0]), np.array([0, 1]))


def test_score_threshold_balanced_accuracy():
    logits = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    labels = np.array([0, 0, 0, 1, 1])
    # At 0.5 every harmful prompt and one of three harmless prompts is classified right.
    assert score_threshold(logits, labels, 0.5) == pytest.approx((1.0 + 1 / 3) / 2)


def test_pick_layer_prefers_signal_layer(planted):
    rng = np.random.default_rng(7)
    train, train_labels, train_langs = make_activations(rng, planted, n_per_class=40)
    val, val_labels, _ = make_activations(rng, planted, n_per_class=20)
    noise_train = rng.normal(size=train.shape).astype(np.float32)
    noise_val = rng.normal(size=val.shape).astype(np.float32)
    layer, aucs = pick_layer(
        {3: noise_train, 7: train}, train_labels, train_langs,
        {3: noise_val, 7: val}, val_labels, rank=4,
    )
    assert layer == 7
    assert aucs[7] > 0.99
    assert aucs[3] < 0.8


def test_pick_layer_mismatched_layers(planted):
    features, labels, langs = make_activations(np.random.default_rng(8), planted, n_per_class=5)
    with pytest.raises(ValueError, match=r"same non-empty set of layers; got \[1\] and \[2\]"):
        pick_layer({1: features}, labels, langs, {2: features}, labels)


def target_examples(rng, planted, budget, offset):
    harmful = offset + 0.5 * rng.normal(size=(budget, N_EMBD)) + 4.0 * planted
    harmless = offset + 0.5 * rng.normal(size=(budget, N_EMBD))
    features = np.vstack([harmful, harmless]).astype(np.float32)
    return features, np.array([1] * budget + [0] * budget)


def test_calibrate_one_shot_threshold_between(gate, planted):
    fit, _, _ = gate
    features, labels = target_examples(np.random.default_rng(9), planted, 1, np.zeros(N_EMBD))
    calibration = calibrate_language(
        "sw", features, labels, basis_t=fit.readout.basis_t_, train_z=fit.train_z,
        train_labels=fit.train_labels, C=fit.readout.C,
    )
    harmful_logit, harmless_logit = calibration.readout.decision_function(features)
    assert harmless_logit < calibration.threshold < harmful_logit
    assert calibration.threshold == pytest.approx((harmful_logit + harmless_logit) / 2)
    assert calibration.budget == 1
    assert calibration.fit_score == 1.0
    assert calibration.lang == "sw"


def test_calibrate_keeps_basis_refits_weights(gate, planted):
    fit, _, _ = gate
    features, labels = target_examples(np.random.default_rng(10), planted, 4, np.zeros(N_EMBD))
    calibration = calibrate_language(
        "am", features, labels, basis_t=fit.readout.basis_t_, train_z=fit.train_z,
        train_labels=fit.train_labels,
    )
    assert np.array_equal(calibration.readout.basis_t_, fit.readout.basis_t_)
    assert not np.array_equal(calibration.readout.coef_, fit.readout.coef_)
    assert calibration.budget == 4


def test_calibrate_fixes_shifted_language(gate, planted):
    fit, _, _ = gate
    # The target language sits far along v_hrl, so the budget-0 threshold calls
    # all of its prompts harmful.
    offset = fit.v_hrl.astype(np.float64) * 6.0
    features, labels = target_examples(np.random.default_rng(11), planted, 4, offset)
    budget0_score = score_threshold(fit.readout.decision_function(features), labels, fit.threshold)
    calibration = calibrate_language(
        "yo", features, labels, basis_t=fit.readout.basis_t_, train_z=fit.train_z,
        train_labels=fit.train_labels,
    )
    assert budget0_score == 0.5
    assert calibration.fit_score == 1.0


def test_calibrate_rejects_unequal_classes(gate):
    fit, features, _ = gate
    with pytest.raises(ValueError, match="got 2 harmful and 1 harmless"):
        calibrate_language("sw", features[[0, 1, -1]], np.array([1, 1, 0]),
                           basis_t=fit.readout.basis_t_, train_z=fit.train_z,
                           train_labels=fit.train_labels)


def test_calibrate_rejects_large_budget(gate):
    fit, features, labels = gate
    budget = MAX_BUDGET + 1
    harmful_index = np.flatnonzero(labels == 1)[:budget]
    harmless_index = np.flatnonzero(labels == 0)[:budget]
    index = np.concatenate([harmful_index, harmless_index])
    with pytest.raises(ValueError, match=f"1 to {MAX_BUDGET} examples per class; got {budget}"):
        calibrate_language("sw", features[index], labels[index], basis_t=fit.readout.basis_t_,
                           train_z=fit.train_z, train_labels=fit.train_labels)


def test_calibrate_rejects_unknown_language(gate):
    fit, features, labels = gate
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        calibrate_language("xx", features[:2], labels[:2], basis_t=fit.readout.basis_t_,
                           train_z=fit.train_z, train_labels=fit.train_labels)


def test_calibrate_rejects_mismatched_train_z(gate):
    fit, features, labels = gate
    with pytest.raises(ValueError, match=r"train_z must have shape \(n_train, 4\)"):
        calibrate_language("sw", features[[0, -1]], labels[[0, -1]], basis_t=fit.readout.basis_t_,
                           train_z=fit.train_z[:, :3], train_labels=fit.train_labels)
