import numpy as np
import pytest

from lrgate_cpp.readout import LowRankReadout, RankCappedWarning, build_basis, check_labels

N_EMBD = 24


def make_directions(rng, n_lang=4):
    directions = rng.normal(size=(n_lang, N_EMBD))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def make_separable(rng, direction, n_per_class=200, shift=3.0):
    harmless = rng.normal(size=(n_per_class, N_EMBD))
    harmful = rng.normal(size=(n_per_class, N_EMBD)) + shift * direction
    features = np.vstack([harmful, harmless]).astype(np.float32)
    labels = np.array([1] * n_per_class + [0] * n_per_class)
    return features, labels


def reference_logits(readout, features):
    z = features.astype(np.float64) @ readout.basis_t_.astype(np.float64).T
    standardized = (z - readout.mean_) / readout.scale_
    return standardized @ readout.coef_.astype(np.float64) + float(readout.intercept_)


def test_build_basis_orthonormal_and_spanning():
    rng = np.random.default_rng(0)
    directions = make_directions(rng)
    basis_t, singular_values = build_basis(directions, 4)
    assert basis_t.dtype == np.float32
    assert basis_t.shape == (4, N_EMBD)
    np.testing.assert_allclose(basis_t @ basis_t.T, np.eye(4), atol=1e-6)
    assert np.all(np.diff(singular_values) <= 0)
    reconstructed = directions @ basis_t.T @ basis_t
    np.testing.assert_allclose(reconstructed, directions, atol=1e-5)


def test_build_basis_caps_rank_with_warning():
    directions = make_directions(np.random.default_rng(1), n_lang=3)
    with pytest.warns(RankCappedWarning, match="rank 10 exceeds the 3 directions"):
        basis_t, _ = build_basis(directions, 10)
    assert basis_t.shape == (3, N_EMBD)


def test_build_basis_lower_rank_keeps_top_vectors():
    rng = np.random.default_rng(2)
    shared = rng.normal(size=N_EMBD)
    shared /= np.linalg.norm(shared)
    directions = shared + 0.05 * rng.normal(size=(5, N_EMBD))
    basis_t, _ = build_basis(directions, 1)
    assert abs(float(basis_t[0] @ shared)) > 0.99


@pytest.mark.parametrize("rank", [0, -1, 2.5])
def test_build_basis_rejects_bad_rank(rank):
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        build_basis(make_directions(np.random.default_rng(3)), rank)


def test_check_labels_errors():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        check_labels(np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"found \[2\]"):
        check_labels(np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="only class 1"):
        check_labels(np.array([1, 1]), 2)


def test_init_only_stores_parameters():
    readout = LowRankReadout(rank=3, C=0.5)
    assert readout.get_params() == {"C": 0.5, "rank": 3}
    assert not hasattr(readout, "basis_t_")
    assert not hasattr(readout, "coef_")


def test_fit_sets_float32_attributes():
    rng = np.random.default_rng(4)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[0])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    assert readout.basis_t_.shape == (4, N_EMBD)
    for name in ("mean_", "scale_", "coef_"):
        value = getattr(readout, name)
        assert value.dtype == np.float32, name
        assert value.shape == (4,), name
    assert isinstance(readout.intercept_, np.float32)
    assert np.all(readout.scale_ > 0)


def test_fit_separates_planted_direction():
    rng = np.random.default_rng(5)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[1])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    accuracy = np.mean((readout.decision_function(features) >= 0) == labels)
    assert accuracy > 0.9


def test_decision_function_matches_reference():
    rng = np.random.default_rng(6)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[0])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    logits = readout.decision_function(features)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference_logits(readout, features), rtol=1e-5, atol=1e-5)


def test_decision_function_projected_close():
    rng = np.random.default_rng(7)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[2])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    projected = readout.decision_function_projected(readout.transform(features))
    np.testing.assert_allclose(projected, readout.decision_function(features), atol=1e-4)


def test_predict_proba_rows_sum_to_one():
    rng = np.random.default_rng(8)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[0])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    proba = readout.predict_proba(features)
    assert proba.shape == (len(features), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(proba[labels == 1, 1]) > 0.8


def test_class_balanced_weights_center_boundary():
    rng = np.random.default_rng(9)
    direction = make_directions(rng, n_lang=1)[0]
    harmless = rng.normal(size=(900, N_EMBD)) - 1.5 * direction
    harmful = rng.normal(size=(100, N_EMBD)) + 1.5 * direction
    features = np.vstack([harmful, harmless]).astype(np.float32)
    labels = np.array([1] * 100 + [0] * 900)
    readout = LowRankReadout(rank=1).fit(direction[None, :], features, labels)
    centers = np.stack([1.5 * direction, -1.5 * direction]).astype(np.float32)
    logit_harmful, logit_harmless = readout.decision_function(centers)
    # Without class weights the 9:1 imbalance shifts both logits by about -log(9) = -2.2.
    assert abs(logit_harmful + logit_harmless) < 0.6


def test_fit_projected_keeps_basis_changes_weights():
    rng = np.random.default_rng(10)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[0])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    basis_before = readout.basis_t_.copy()
    coef_before = readout.coef_.copy()
    z = readout.transform(features)
    readout.fit_projected(z, 1 - labels)
    assert np.array_equal(readout.basis_t_, basis_before)
    assert np.all(np.sign(readout.coef_) == -np.sign(coef_before))


def test_from_basis_then_fit_projected_matches_fit():
    rng = np.random.default_rng(11)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[3])
    fitted = LowRankReadout(rank=4).fit(directions, features, labels)
    refit = LowRankReadout.from_basis(fitted.basis_t_)
    refit.fit_projected(fitted.transform(features), labels)
    assert refit.rank == 4
    np.testing.assert_array_equal(refit.coef_, fitted.coef_)
    assert refit.intercept_ == fitted.intercept_


def test_from_params_reproduces_logits():
    rng = np.random.default_rng(12)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[0])
    fitted = LowRankReadout(rank=4).fit(directions, features, labels)
    rebuilt = LowRankReadout.from_params(
        fitted.basis_t_, fitted.mean_, fitted.scale_, fitted.coef_, fitted.intercept_
    )
    np.testing.assert_array_equal(
        rebuilt.decision_function(features), fitted.decision_function(features)
    )


def test_from_params_rejects_bad_scale():
    basis_t = np.eye(2, N_EMBD, dtype=np.float32)
    with pytest.raises(ValueError, match="scale must be positive"):
        LowRankReadout.from_params(basis_t, np.zeros(2), np.array([1.0, 0.0]), np.ones(2), 0.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(2,\)"):
        LowRankReadout.from_params(basis_t, np.zeros(2), np.ones(2), np.ones(3), 0.0)


def test_unfitted_readout_raises():
    with pytest.raises(ValueError, match="has no basis yet"):
        LowRankReadout().decision_function(np.zeros((1, N_EMBD), np.float32))
    readout = LowRankReadout.from_basis(np.eye(2, N_EMBD, dtype=np.float32))
    with pytest.raises(ValueError, match="is not fitted"):
        readout.decision_function(np.zeros((1, N_EMBD), np.float32))


def test_feature_validation():
    rng = np.random.default_rng(13)
    directions = make_directions(rng)
    features, labels = make_separable(rng, directions[0])
    readout = LowRankReadout(rank=4).fit(directions, features, labels)
    with pytest.raises(ValueError, match=rf"shape \(n_samples, {N_EMBD}\)"):
        readout.decision_function(np.zeros((2, N_EMBD + 1), np.float32))
    broken = features[:3].copy()
    broken[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in row 2"):
        readout.decision_function(broken)


def test_fit_rejects_single_class():
    rng = np.random.default_rng(14)
    directions = make_directions(rng)
    features, _ = make_separable(rng, directions[0])
    with pytest.raises(ValueError, match="only class 0"):
        LowRankReadout(rank=4).fit(directions, features, np.zeros(len(features)))
