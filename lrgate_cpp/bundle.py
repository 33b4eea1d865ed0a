"""Gate bundles: a fitted gate and its per-language calibrations in one GGUF file.

The file's ``general.architecture`` is ``lrgate``. Metadata keys start with
``lrgate.``. Tensors are float32 except ``train_labels`` (int8):

- ``basis_t`` (rank, n_embd) and ``v_hrl`` (n_embd,);
- ``readout.{mean,scale,weight}`` (rank,) and ``readout.bias`` (1,), the budget-0 readout;
- ``lang.<code>.{mean,scale,weight,bias}`` for each calibrated language;
- ``train_z`` (n_train, rank) and ``train_labels`` (n_train,), which let
  calibration refit the readout without running the model.

``lrgate.sha256`` is a digest of all other ``lrgate.*`` metadata and all
tensors, so a damaged file fails to load instead of gating wrongly. A gate
routes a prompt as harmful when its logit is >= its language's threshold.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lrgate_cpp.bundle_format import FORMAT_VERSION, BundleError, read_gguf, write_gguf
from lrgate_cpp.fingerprint import ModelFingerprint
from lrgate_cpp.fitting import MAX_BUDGET, GateFit, LanguageCalibration
from lrgate_cpp.languages import check_language
from lrgate_cpp.readout import LowRankReadout

__all__ = [
    "FORMAT_VERSION",
    "BundleError",
    "GateBundle",
    "LanguageGate",
    "ModelFingerprint",
    "ModelMismatchError",
    "UncalibratedLanguageWarning",
]

_STRING = gguf.GGUFValueType.STRING
_UINT32 = gguf.GGUFValueType.UINT32
_FLOAT64 = gguf.GGUFValueType.FLOAT64


class ModelMismatchError(ValueError):
    """A bundle was fitted on a different model than the one it is used with."""


class UncalibratedLanguageWarning(UserWarning):
    """A language has no calibration in the bundle, so the budget-0 readout is used."""


@dataclass
class LanguageGate:
    """Readout parameters and threshold for one language.

    ``mean``, ``scale`` and ``weight`` are float32 of shape (rank,), and
    ``bias`` is a float32 scalar. ``budget`` is the number of examples per
    class the readout was calibrated with, 0 for the source-language readout.
    """

    threshold: float
    budget: int
    fit_score: float
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.float32

    @classmethod
    def from_readout(
        cls, readout: LowRankReadout, threshold: float, budget: int, fit_score: float
    ) -> LanguageGate:
        """Copy the scaler and logistic parameters out of a fitted readout."""
        return cls(
            float(threshold), int(budget), float(fit_score),
            readout.mean_.copy(), readout.scale_.copy(), readout.coef_.copy(),
            np.float32(readout.intercept_),
        )


@dataclass
class GateBundle:
    """A fitted gate for one model and layer, with per-language calibrations.

    Attributes:
        model: the model the gate was fitted on.
        layer: index of the decoder block whose output ``l_out-<layer>`` is read.
        position: name of the token position read, for example ``"t_post_inst"``.
        lam, alpha: steering multiplier and strength along ``v_hrl``.
        C: inverse L2 strength the readouts were fitted with.
        source_languages: languages the budget-0 gate was fitted on.
        basis_t: float32 of shape (rank, n_embd).
        v_hrl: float32 of shape (n_embd,).
        train_z: float32 of shape (n_train, rank).
        train_labels: int8 of shape (n_train,), 1 harmful, 0 harmless.
        default: the budget-0 readout and threshold.
        calibrations: per-language readouts, keyed by language code.
    """

    model: ModelFingerprint
    layer: int
    position: str
    lam: float
    alpha: float
    C: float
    source_languages: tuple[str, ...]
    basis_t: np.ndarray
    v_hrl: np.ndarray
    train_z: np.ndarray
    train_labels: np.ndarray
    default: LanguageGate
    calibrations: dict[str, LanguageGate] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """Number of basis vectors."""
        return int(self.basis_t.shape[0])

    @classmethod
    def from_fit(
        cls, fit: GateFit, model: ModelFingerprint, layer: int, position: str = "t_post_inst"
    ) -> GateBundle:
        """Build a bundle from a budget-0 fit, with no calibrated languages yet."""
        bundle = cls(
            model=model,
            layer=int(layer),
            position=position,
            lam=float(fit.lam),
            alpha=float(fit.alpha),
            C=float(fit.readout.C),
            source_languages=tuple(fit.source_languages),
            basis_t=fit.readout.basis_t_.copy(),
            v_hrl=np.array(fit.v_hrl, dtype=np.float32),
            train_z=np.array(fit.train_z, dtype=np.float32),
            train_labels=np.array(fit.train_labels, dtype=np.int8),
            default=LanguageGate.from_readout(fit.readout, fit.threshold, 0, fit.fit_score),
        )
        bundle.validate()
        return bundle

    def add_calibration(self, calibration: LanguageCalibration) -> None:
        """Store one language's calibrated readout and threshold, replacing any earlier one."""
        if not np.array_equal(calibration.readout.basis_t_, self.basis_t):
            raise ValueError(
                f"calibration for {calibration.lang!r} uses another basis than this bundle; "
                "calibrate with the bundle's basis_t"
            )
        self.calibrations[check_language(calibration.lang)] = LanguageGate.from_readout(
            calibration.readout, calibration.threshold, calibration.budget, calibration.fit_score
        )

    def select_gate(self, lang: str) -> LanguageGate:
        """Return the gate of ``lang``, or the budget-0 gate if ``lang`` has none.

        Falling back for a language outside the source languages issues an
        :class:`UncalibratedLanguageWarning`, because the budget-0 threshold
        was never checked on that language.
        """
        return self._select_gate(lang, stacklevel=3)

    def make_readout(self, lang: str) -> tuple[LowRankReadout, float]:
        """Build the readout of ``lang`` and return it with its threshold.

        Falls back to the budget-0 gate as :meth:`select_gate` does.
        """
        gate = self._select_gate(lang, stacklevel=3)
        readout = LowRankReadout.from_params(
            self.basis_t, gate.mean, gate.scale, gate.weight, gate.bias, C=self.C
        )
        return readout, gate.threshold

    def _select_gate(self, lang: str, stacklevel: int) -> LanguageGate:
        lang = check_language(lang)
        if lang in self.calibrations:
            return self.calibrations[lang]
        if lang not in self.source_languages:
            warnings.warn(
                f"language {lang!r} is not calibrated in this bundle, so the budget-0 readout "
                f"is used; calibrate the bundle with a few {lang!r} examples per class",
                UncalibratedLanguageWarning,
                stacklevel=stacklevel,
            )
        return self.default

    def check_model(self, fingerprint: ModelFingerprint) -> None:
        """Raise :class:`ModelMismatchError` unless ``fingerprint`` matches the bundle's model."""
        differing = self.model.differences(fingerprint)
        if differing:
            raise ModelMismatchError(
                f"this gate bundle was fitted on {self.model.describe()}, but the loaded model "
                f"is {fingerprint.describe()} (they differ in {', '.join(differing)}); use a "
                "bundle fitted on this model"
            )

    def validate(self) -> None:
        """Raise ValueError if shapes, dtypes or values of the bundle are inconsistent."""
        n_embd, rank = self.model.n_embd, self.rank
        _check_array("basis_t", self.basis_t, np.float32, (rank, n_embd))
        _check_array("v_hrl", self.v_hrl, np.float32, (n_embd,))
        _check_array("train_z", self.train_z, np.float32, (len(self.train_z), rank))
        _check_array("train_labels", self.train_labels, np.int8, (len(self.train_z),))
        if not np.all((self.train_labels == 0) | (self.train_labels == 1)):
            raise ValueError("train_labels must be 0 or 1")
        if rank < 1:
            raise ValueError("basis_t must have at least one row")
        if not 0 <= self.layer < self.model.n_layer:
            raise ValueError(
                f"layer {self.layer} is outside the model's 0..{self.model.n_layer - 1}"
            )
        if not self.source_languages:
            raise ValueError("source_languages must not be empty")
        for code in self.source_languages:
            check_language(code)
        for code, gate in [("budget-0", self.default), *self.calibrations.items()]:
            if code != "budget-0":
                check_language(code)
                if not 1 <= gate.budget <= MAX_BUDGET:
                    raise ValueError(
                        f"budget of {code!r} must be 1..{MAX_BUDGET}; got {gate.budget}"
                    )
            for name in ("mean", "scale", "weight"):
                _check_array(f"{name} of {code}", getattr(gate, name), np.float32, (rank,))
            if np.any(gate.scale <= 0):
                raise ValueError(f"scale of {code} must be positive")
            if not np.isfinite([gate.threshold, gate.bias]).all():
                raise ValueError(f"threshold and bias of {code} must be finite")

    def save(self, path: str | Path) -> None:
        """Write the bundle to ``path`` as GGUF.

        The file is written next to ``path`` under a temporary name and then
        renamed over it, so a failed write leaves an existing file intact.
        """
        self.validate()
        path = Path(path)
        descriptor, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        os.close(descriptor)
        try:
            write_gguf(Path(temp_name), self._to_metadata(), self._to_tensors())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> GateBundle:
        """Read a bundle written by :meth:`save`.

        Raises:
            BundleError: if the file is missing, not GGUF, not a gate bundle,
                of another format version, truncated or corrupt.
        """
        path = Path(path)
        metadata, tensors = read_gguf(path)
        try:
            bundle = cls._from_contents(metadata, tensors)
            bundle.validate()
        except (KeyError, ValueError) as error:
            raise BundleError(
                f"gate bundle {path} is invalid: {error}; refit or re-save it"
            ) from error
        return bundle

    def _to_metadata(self) -> dict[str, tuple[gguf.GGUFValueType, Any]]:
        metadata: dict[str, tuple[gguf.GGUFValueType, Any]] = {
            "lrgate.model.architecture": (_STRING, self.model.architecture),
            "lrgate.model.n_embd": (_UINT32, self.model.n_embd),
            "lrgate.model.n_layer": (_UINT32, self.model.n_layer),
            "lrgate.model.tokenizer": (_STRING, self.model.tokenizer),
            "lrgate.model.name": (_STRING, self.model.name),
            "lrgate.layer": (_UINT32, self.layer),
            "lrgate.position": (_STRING, self.position),
            "lrgate.rank": (_UINT32, self.rank),
            "lrgate.lambda": (_FLOAT64, self.lam),
            "lrgate.alpha": (_FLOAT64, self.alpha),
            "lrgate.readout_c": (_FLOAT64, self.C),
            "lrgate.source_languages": (_STRING, ",".join(self.source_languages)),
            "lrgate.calibrated_languages": (_STRING, ",".join(self.calibrations)),
        }
        for prefix, gate in self._gates_by_prefix():
            metadata[f"lrgate.{prefix}.threshold"] = (_FLOAT64, gate.threshold)
            metadata[f"lrgate.{prefix}.budget"] = (_UINT32, gate.budget)
            metadata[f"lrgate.{prefix}.fit_score"] = (_FLOAT64, gate.fit_score)
        # Plain Python values, so that the digest (built from repr) matches
        # the values the reader returns.
        convert = {_UINT32: int, _FLOAT64: float, _STRING: str}
        return {key: (kind, convert[kind](value)) for key, (kind, value) in metadata.items()}

    def _to_tensors(self) -> dict[str, np.ndarray]:
        tensors = {
            "basis_t": self.basis_t,
            "v_hrl": self.v_hrl,
            "train_z": self.train_z,
            "train_labels": self.train_labels,
        }
        for prefix, gate in self._gates_by_prefix():
            tensors[f"{prefix}.mean"] = gate.mean
            tensors[f"{prefix}.scale"] = gate.scale
            tensors[f"{prefix}.weight"] = gate.weight
            tensors[f"{prefix}.bias"] = np.array([gate.bias], dtype=np.float32)
        return {name: np.ascontiguousarray(array) for name, array in tensors.items()}

    def _gates_by_prefix(self) -> list[tuple[str, LanguageGate]]:
        return [("readout", self.default)] + [
            (f"lang.{code}", gate) for code, gate in self.calibrations.items()
        ]

    @classmethod
    def _from_contents(cls, metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> GateBundle:
        def read_gate(prefix: str) -> LanguageGate:
            return LanguageGate(
                threshold=metadata[f"lrgate.{prefix}.threshold"],
                budget=metadata[f"lrgate.{prefix}.budget"],
                fit_score=metadata[f"lrgate.{prefix}.fit_score"],
                mean=tensors[f"{prefix}.mean"],
                scale=tensors[f"{prefix}.scale"],
                weight=tensors[f"{prefix}.weight"],
                bias=np.float32(tensors[f"{prefix}.bias"][0]),
            )

        calibrated = [code for code in metadata["lrgate.calibrated_languages"].split(",") if code]
        bundle = cls(
            model=ModelFingerprint(
                architecture=metadata["lrgate.model.architecture"],
                n_embd=metadata["lrgate.model.n_embd"],
                n_layer=metadata["lrgate.model.n_layer"],
                tokenizer=metadata["lrgate.model.tokenizer"],
                name=metadata["lrgate.model.name"],
            ),
            layer=metadata["lrgate.layer"],
            position=metadata["lrgate.position"],
            lam=metadata["lrgate.lambda"],
            alpha=metadata["lrgate.alpha"],
            C=metadata["lrgate.readout_c"],
            source_languages=tuple(metadata["lrgate.source_languages"].split(",")),
            basis_t=tensors["basis_t"],
            v_hrl=tensors["v_hrl"],
            train_z=tensors["train_z"],
            train_labels=tensors["train_labels"],
            default=read_gate("readout"),
            calibrations={code: read_gate(f"lang.{code}") for code in calibrated},
        )
        if metadata["lrgate.rank"] != bundle.rank:
            raise ValueError(
                f"metadata rank {metadata['lrgate.rank']} does not match the "
                f"{bundle.rank} rows of basis_t"
            )
        return bundle


def _check_array(name: str, array: np.ndarray, dtype: type, shape: tuple[int, ...]) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
        found = (getattr(array, "dtype", type(array).__name__), getattr(array, "shape", None))
        raise ValueError(
            f"{name} must be {np.dtype(dtype).name} of shape {shape}; "
            f"got {found[0]} of shape {found[1]}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
