"""The numba kernels against numpy references and against the hook's C kernels."""

import ctypes

import numpy as np
import pytest

from lrgate_cpp.kernels import ablate_rows, add_rows, project_rows, readout_logits
from lrgate_cpp.native import load_hook_library


def _float_pointer(array: np.ndarray) -> ctypes._Pointer:
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


@pytest.fixture()
def problem() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n_rows, n_embd, rank = 9, 96, 5
    basis, _ = np.linalg.qr(rng.standard_normal((n_embd, rank)))
    v = rng.standard_normal(n_embd)
    return {
        "rows": (rng.standard_normal((n_rows, n_embd)) * 3).astype(np.float32),
        "basis_t": np.ascontiguousarray(basis.T, dtype=np.float32),
        "mean": rng.standard_normal(rank).astype(np.float32),
        "scale": rng.uniform(0.5, 2.0, rank).astype(np.float32),
        "weight": rng.standard_normal(rank).astype(np.float32),
        "v": (v / np.linalg.norm(v)).astype(np.float32),
    }


def test_project_matches_numpy(problem):
    z = project_rows(problem["rows"], problem["basis_t"])
    expected = problem["rows"].astype(np.float64) @ problem["basis_t"].T.astype(np.float64)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)


def test_readout_matches_numpy(problem):
    p = problem
    logits = readout_logits(p["rows"], p["basis_t"], p["mean"], p["scale"], p["weight"], 0.25)
    z = p["rows"].astype(np.float64) @ p["basis_t"].T.astype(np.float64)
    expected = 0.25 + ((z - p["mean"]) / p["scale"]) @ p["weight"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_add_matches_numpy(problem):
    rows = problem["rows"].copy()
    add_rows(rows, problem["v"], 2.5)
    np.testing.assert_allclose(rows, problem["rows"] + 2.5 * problem["v"], rtol=1e-6, atol=1e-6)


def test_ablate_removes_component(problem):
    rows = problem["rows"].copy()
    ablate_rows(rows, problem["v"])
    residual = np.abs(rows.astype(np.float64) @ problem["v"])
    assert np.all(residual < 1e-5 * np.linalg.norm(rows, axis=1))
    untouched = problem["rows"] - np.outer(problem["rows"] @ problem["v"], problem["v"])
    np.testing.assert_allclose(rows, untouched, rtol=1e-5, atol=1e-5)


def test_ablate_rejects_non_unit(problem):
    with pytest.raises(ValueError, match="unit norm"):
        ablate_rows(problem["rows"].copy(), problem["v"] * 2)
    with pytest.raises(ValueError, match="unit norm"):
        ablate_rows(problem["rows"].copy(), np.zeros_like(problem["v"]))


def test_kernels_reject_float64_rows(problem):
    with pytest.raises(ValueError, match="float32"):
        project_rows(problem["rows"].astype(np.float64), problem["basis_t"])


def test_c_kernels_equal_numba(problem):
    lib = load_hook_library()
    p = problem
    n_rows, n_embd = p["rows"].shape
    rank = p["basis_t"].shape[0]

    z_c = np.empty((n_rows, rank), dtype=np.float32)
    lib.lrg_project_rows(_float_pointer(p["rows"]), n_rows, n_embd, _float_pointer(p["basis_t"]),
                         rank, _float_pointer(z_c))
    np.testing.assert_array_equal(z_c, project_rows(p["rows"], p["basis_t"]))

    logits_c = np.empty(n_rows, dtype=np.float32)
    lib.lrg_readout_rows(_float_pointer(p["rows"]), n_rows, n_embd, _float_pointer(p["basis_t"]),
                         rank, _float_pointer(p["mean"]), _float_pointer(p["scale"]),
                         _float_pointer(p["weight"]), 0.25, _float_pointer(logits_c))
    logits_numba = readout_logits(p["rows"], p["basis_t"], p["mean"], p["scale"], p["weight"], 0.25)
    np.testing.assert_allclose(logits_c, logits_numba, rtol=1e-6, atol=1e-6)

    added_c = p["rows"].copy()
    lib.lrg_add_rows(_float_pointer(added_c), n_rows, n_embd, _float_pointer(p["v"]), 1.5)
    np.testing.assert_array_equal(added_c, add_rows(p["rows"].copy(), p["v"], 1.5))

    ablated_c = p["rows"].copy()
    lib.lrg_ablate_rows(_float_pointer(ablated_c), n_rows, n_embd, _float_pointer(p["v"]))
    np.testing.assert_allclose(ablated_c, ablate_rows(p["rows"].copy(), p["v"]), rtol=0,
                               atol=1e-6)
