"""Low-rank logistic readout of the residual stream.

The readout projects a residual-stream row ``h`` of shape (n_embd,) onto an
orthonormal basis spanned by per-language harmfulness directions, then
applies a standardized logistic regression:

    logit(h) = bias + weight . ((basis_t @ h - mean) / scale)

All fitted parameters are float32, the precision the native hook uses.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lrgate_cpp.kernels import project_rows, readout_logits

__all__ = ["LowRankReadout", "RankCappedWarning", "build_basis", "check_labels"]

logger = logging.getLogger(__name__)

# Headroom over sklearn's default of 100 lbfgs iterations for nearly
# separable sets, where weak regularization lets the weights keep growing.
_MAX_ITER = 1000


class RankCappedWarning(UserWarning):
    """The requested rank exceeds the number of directions, so a smaller rank is used."""


def build_basis(directions: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Build an orthonormal basis from the top right singular vectors of stacked directions.

    Args:
        directions: array of shape (n_lang, n_embd), one unit direction per row.
        rank: number of basis vectors wanted. It is capped at
            ``min(n_lang, n_embd)`` with a :class:`RankCappedWarning`.

    Returns:
        ``(basis_t, singular_values)``: float32 of shape (rank, n_embd) with
        orthonormal rows, and float64 of shape (rank,), descending.
    """
    directions = np.asarray(directions, dtype=np.float64)
    if directions.ndim != 2 or directions.shape[0] == 0:
        raise ValueError(
            f"directions must have shape (n_lang, n_embd) with n_lang >= 1; got {directions.shape}"
        )
    if not np.all(np.isfinite(directions)):
        raise ValueError("directions contain NaN or inf; recompute them from finite activations")
    if not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive integer; got {rank!r}")
    max_rank = min(directions.shape)
    if rank > max_rank:
        warnings.warn(
            f"rank {rank} exceeds the {directions.shape[0]} directions available; "
            f"using rank {max_rank}",
            RankCappedWarning,
            stacklevel=3,
        )
        rank = max_rank
    _, singular_values, vt = np.linalg.svd(directions, full_matrices=False)
    return np.ascontiguousarray(vt[:rank], dtype=np.float32), singular_values[:rank]


def check_labels(labels: np.ndarray, n_samples: int) -> np.ndarray:
    """Validate 0/1 labels (1 = harmful) for ``n_samples`` rows and return them as int8.

    Raises:
        ValueError: on a length mismatch, a value other than 0 and 1, or a
            missing class.
    """
    labels = np.asarray(labels)
    if labels.shape != (n_samples,):
        raise ValueError(f"labels must have shape ({n_samples},); got {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(
            "labels must be 0 (harmless) or 1 (harmful); "
            f"found {sorted(set(np.unique(labels).tolist()) - {0, 1})}"
        )
    labels = labels.astype(np.int8)
    if labels.min() == labels.max():
        raise ValueError(
            f"labels contain only class {int(labels[0])}; the readout needs harmful and "
            "harmless examples"
        )
    return labels


class LowRankReadout(BaseEstimator):
    """Standardized L2 logistic regression on a low-rank projection of residual rows.

    Parameters:
        rank: number of basis vectors, at most the number of directions
            (default 10).
        C: inverse L2 regularization strength of the logistic regression
            (default 1.0).

    Fitted attributes:
        basis_t_: float32 of shape (rank, n_embd), orthonormal rows.
        singular_values_: float64 of shape (rank,), or None when the basis
            was given rather than computed.
        mean_, scale_: float32 of shape (rank,), the scaler statistics of
            the projected features. ``scale_`` is positive.
        coef_: float32 of shape (rank,), the logistic weights. Unlike
            scikit-learn's classifiers this is 1-D, the layout the kernels take.
        intercept_: float32 scalar, the logistic bias.
    """

    def __init__(self, rank: int = 10, C: float = 1.0) -> None:
        self.rank = rank
        self.C = C

    @classmethod
    def from_basis(cls, basis_t: np.ndarray, C: float = 1.0) -> LowRankReadout:
        """Create a readout with a fixed basis, ready for :meth:`fit_projected`.

        ``basis_t`` of shape (rank, n_embd) is copied as float32.
        """
        basis_t = np.array(basis_t, dtype=np.float32)
        if basis_t.ndim != 2:
            raise ValueError(f"basis_t must have shape (rank, n_embd); got {basis_t.shape}")
        readout = cls(rank=basis_t.shape[0], C=C)
        readout.basis_t_ = basis_t
        readout.singular_values_ = None
        return readout

    @classmethod
    def from_params(
        cls,
        basis_t: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        weight: np.ndarray,
        bias: float,
        C: float = 1.0,
    ) -> LowRankReadout:
        """Rebuild a fitted readout from stored parameters, for example from a bundle."""
        readout = cls.from_basis(basis_t, C)
        rank = readout.basis_t_.shape[0]
        readout.mean_, readout.scale_, readout.coef_ = (
            _as_rank_vector(values, rank, name)
            for name, values in (("mean", mean), ("scale", scale), ("weight", weight))
        )
        if np.any(readout.scale_ <= 0):
            raise ValueError("scale must be positive in every component")
        readout.intercept_ = np.float32(bias)
        return readout

    def fit(
        self, directions: np.ndarray, features: np.ndarray, labels: np.ndarray
    ) -> LowRankReadout:
        """Build the basis from ``directions``, then fit the scaler and logistic regression.

        Args:
            directions: array of shape (n_lang, n_embd), one unit direction per language.
            features: residual rows of shape (n_samples, n_embd), converted to float32.
            labels: array of shape (n_samples,), 1 for harmful and 0 for harmless.

        Returns:
            self.
        """
        self.basis_t_, self.singular_values_ = build_basis(directions, self.rank)
        return self.fit_projected(self.transform(features), labels)

    def fit_projected(self, z: np.ndarray, labels: np.ndarray) -> LowRankReadout:
        """Refit only the scaler and logistic regression on projected features; keep the basis.

        Args:
            z: projected features ``basis_t_ @ h`` of shape (n_samples, rank).
            labels: array of shape (n_samples,), 1 for harmful and 0 for harmless.

        Returns:
            self.
        """
        self._check_basis()
        rank = self.basis_t_.shape[0]
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != rank:
            raise ValueError(f"z must have shape (n_samples, {rank}); got {z.shape}")
        _check_finite(z, "z")
        labels = check_labels(labels, z.shape[0])

        scaler = StandardScaler().fit(z)
        logistic = LogisticRegression(C=self.C, class_weight="balanced", max_iter=_MAX_ITER)
        logistic.fit(scaler.transform(z), labels)
        self.mean_ = scaler.mean_.astype(np.float32)
        self.scale_ = scaler.scale_.astype(np.float32)
        self.coef_ = logistic.coef_[0].astype(np.float32)
        self.intercept_ = np.float32(logistic.intercept_[0])
        logger.debug("fitted readout on %d samples of rank %d", z.shape[0], rank)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Project rows of shape (n_samples, n_embd) to float32 z of shape (n_samples, rank)."""
        self._check_basis()
        return project_rows(self._check_features(features), self.basis_t_)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Return float32 logits of shape (n_samples,) for rows of shape (n_samples, n_embd).

        Positive logits lean harmful. The native hook computes the same
        numbers with the same float64 accumulation.
        """
        self._check_fitted()
        return readout_logits(
            self._check_features(features),
            self.basis_t_,
            self.mean_,
            self.scale_,
            self.coef_,
            self.intercept_,
        )

    def decision_function_projected(self, z: np.ndarray) -> np.ndarray:
        """Return float32 logits of shape (n_samples,) for projected z of shape (n_samples, rank).

        Because ``z`` was rounded to float32 after projection, results can
        differ from :meth:`decision_function` in the last float32 bits.
        """
        self._check_fitted()
        z = np.asarray(z, dtype=np.float64)
        standardized = (z - self.mean_.astype(np.float64)) / self.scale_.astype(np.float64)
        logits = standardized @ self.coef_.astype(np.float64) + np.float64(self.intercept_)
        return logits.astype(np.float32)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Return float64 probabilities of shape (n_samples, 2), columns harmless then harmful."""
        harmful = 1.0 / (1.0 + np.exp(-self.decision_function(features).astype(np.float64)))
        return np.column_stack([1.0 - harmful, harmful])

    def _check_basis(self) -> None:
        if not hasattr(self, "basis_t_"):
            raise ValueError(
                "this LowRankReadout has no basis yet; call fit() or create it with from_basis()"
            )

    def _check_fitted(self) -> None:
        self._check_basis()
        if not hasattr(self, "coef_"):
            raise ValueError("this LowRankReadout is not fitted; call fit() or fit_projected()")

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, dtype=np.float32)
        n_embd = self.basis_t_.shape[1]
        if features.ndim != 2 or features.shape[1] != n_embd:
            raise ValueError(
                f"features must have shape (n_samples, {n_embd}); got {features.shape}"
            )
        _check_finite(features, "features")
        return features


def _check_finite(values: np.ndarray, name: str) -> None:
    bad = ~np.all(np.isfinite(values), axis=1)
    if np.any(bad):
        raise ValueError(f"{name} contain NaN or inf in row {int(np.argmax(bad))}")


def _as_rank_vector(values: np.ndarray, rank: int, name: str) -> np.ndarray:
    values = np.array(values, dtype=np.float32)
    if values.shape != (rank,):
        raise ValueError(f"{name} must have shape ({rank},); got {values.shape}")
    return values
