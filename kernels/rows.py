"""Kernels over residual-stream rows: projection, addition and ablation.

Rows are float32 arrays of shape (n_rows, n_embd), C-contiguous. Dot
products accumulate in float64, as in the C hook, so both give the same
float32 result up to rounding of the final store.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _project_rows(rows, basis_t, out):
    n_rows, n_embd = rows.shape
    rank = basis_t.shape[0]
    for r in range(n_rows):
        for j in range(rank):
            acc = 0.0
            for i in range(n_embd):
                acc += np.float64(basis_t[j, i]) * np.float64(rows[r, i])
            out[r, j] = np.float32(acc)


@numba.njit(cache=True, nogil=True)
def _add_rows(rows, v, alpha):
    n_rows, n_embd = rows.shape
    for r in range(n_rows):
        for i in range(n_embd):
            rows[r, i] += alpha * v[i]


@numba.njit(cache=True, nogil=True)
def _ablate_rows(rows, v):
    n_rows, n_embd = rows.shape
    for r in range(n_rows):
        acc = 0.0
        for i in range(n_embd):
            acc += np.float64(rows[r, i]) * np.float64(v[i])
        proj = np.float32(acc)
        for i in range(n_embd):
            rows[r, i] -= proj * v[i]


def _as_rows(rows: np.ndarray, name: str = "rows") -> np.ndarray:
    if rows.ndim != 2 or rows.dtype != np.float32 or not rows.flags.c_contiguous:
        raise ValueError(
            f"{name} must be a C-contiguous float32 array of shape (n_rows, n_embd); "
            f"got dtype {rows.dtype}, shape {rows.shape}"
        )
    return rows


def _as_vector(v: np.ndarray, n_embd: int, name: str = "v") -> np.ndarray:
    v = np.ascontiguousarray(v, dtype=np.float32)
    if v.shape != (n_embd,):
        raise ValueError(f"{name} must have shape ({n_embd},); got {v.shape}")
    return v


def project_rows(rows: np.ndarray, basis_t: np.ndarray) -> np.ndarray:
    """Project rows onto a basis: ``z = rows @ basis_t.T``.

    Args:
        rows: float32 array of shape (n_rows, n_embd).
        basis_t: float32 array of shape (rank, n_embd), one basis vector a row.

    Returns:
        float32 array of shape (n_rows, rank).
    """
    rows = _as_rows(rows)
    basis_t = _as_rows(np.ascontiguousarray(basis_t, dtype=np.float32), "basis_t")
    if basis_t.shape[1] != rows.shape[1]:
        raise ValueError(
            f"basis width {basis_t.shape[1]} does not match row width {rows.shape[1]}"
        )
    out = np.empty((rows.shape[0], basis_t.shape[0]), dtype=np.float32)
    _project_rows(rows, basis_t, out)
    return out


def add_rows(rows: np.ndarray, v: np.ndarray, alpha: float) -> np.ndarray:
    """Add ``alpha * v`` to every row, in place, and return ``rows``.

    Args:
        rows: float32 array of shape (n_rows, n_embd), edited in place.
        v: direction of shape (n_embd,); any norm.
        alpha: scale, in the units of the residual stream.
    """
    rows = _as_rows(rows)
    _add_rows(rows, _as_vector(v, rows.shape[1]), np.float32(alpha))
    return rows


def ablate_rows(rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Remove the component along ``v`` from every row, in place: ``h - (h . v) v``.

    Args:
        rows: float32 array of shape (n_rows, n_embd), edited in place.
        v: direction of shape (n_embd,) with unit norm. A zero or non-unit
            vector raises ``ValueError``, because ablation along it would not
            be a projection.
    """
    rows = _as_rows(rows)
    v = _as_vector(v, rows.shape[1])
    norm = float(np.linalg.norm(v.astype(np.float64)))
    if abs(norm - 1.0) > 1e-3:
        raise ValueError(f"ablation direction must have unit norm; got norm {norm:.6g}")
    _ablate_rows(rows, v)
    return rows
