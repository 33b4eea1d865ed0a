"""Kernel for the gate's low-rank logistic readout."""

import numba
import numpy as np

from lrgate_cpp.kernels.rows import _as_rows


@numba.njit(cache=True, nogil=True)
def _readout_logits(rows, basis_t, mean, scale, weight, bias, out):
    n_rows, n_embd = rows.shape
    rank = basis_t.shape[0]
    for r in range(n_rows):
        logit = np.float64(bias)
        for j in range(rank):
            acc = 0.0
            for i in range(n_embd):
                acc += np.float64(basis_t[j, i]) * np.float64(rows[r, i])
            logit += np.float64(weight[j]) * ((acc - np.float64(mean[j])) / np.float64(scale[j]))
        out[r] = np.float32(logit)


def readout_logits(
    rows: np.ndarray,
    basis_t: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    weight: np.ndarray,
    bias: float,
) -> np.ndarray:
    """Compute gate logits: ``bias + weight . ((basis_t @ h - mean) / scale)`` per row.

    Args:
        rows: float32 array of shape (n_rows, n_embd).
        basis_t: float32 array of shape (rank, n_embd).
        mean: scaler mean of shape (rank,).
        scale: scaler standard deviation of shape (rank,), all positive.
        weight: logistic weights of shape (rank,).
        bias: logistic intercept.

    Returns:
        float32 logits of shape (n_rows,); the probability of "harmful" is
        their logistic sigmoid.
    """
    rows = _as_rows(rows)
    basis_t = _as_rows(np.ascontiguousarray(basis_t, dtype=np.float32), "basis_t")
    rank = basis_t.shape[0]
    if basis_t.shape[1] != rows.shape[1]:
        raise ValueError(
            f"basis width {basis_t.shape[1]} does not match row width {rows.shape[1]}"
        )
    arrays = []
    for name, values in (("mean", mean), ("scale", scale), ("weight", weight)):
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (rank,):
            raise ValueError(f"{name} must have shape ({rank},); got {values.shape}")
        arrays.append(values)
    if np.any(arrays[1] <= 0):
        raise ValueError("scale must be positive in every component")
    out = np.empty(rows.shape[0], dtype=np.float32)
    _readout_logits(rows, basis_t, arrays[0], arrays[1], arrays[2], np.float32(bias), out)
    return out
