"""Steering methods compared by ``lrgate eval``, each as hook operations.

Every method reads or edits ``l_out-L`` at the bundle's layer L only.

- ``none``: no edit.
- ``ablate``: remove ``v_HRL`` from every row of every prompt.
- ``add``: add ``alpha * v_HRL`` to the last prompt row and generated rows
  of every prompt.
- ``gate``: the recalibrated gate; budget b uses b validation examples per
  class of the prompt's language (b = 0: the source-language readout).
- ``cast``: conditional activation steering. The condition vector is the
  first principal component of paired harmful-minus-harmless train rows;
  the route adds ``alpha * v_HRL`` when the cosine similarity of the last
  prompt row with it reaches a threshold tuned on source-language
  validation rows, and leaves other prompts unedited. ``cast-adapted``
  tunes that threshold on the b target-language examples instead.
- ``adasteer``: an input-dependent coefficient. A line ``a * (h . v_HRL) + c``
  fitted by least squares to 1 for harmful and 0 for harmless train rows,
  clamped to [0, 1], scales ``alpha`` for every prompt.
  ``adasteer-adapted`` refits the line with the b target examples weighted
  as much as all train rows together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.extract import ActivationStore
from lrgate_cpp.fitting import calibrate_language, choose_threshold
from lrgate_cpp.hook import Hook, Readout, Rows

__all__ = ["METHODS", "MethodSetup", "TargetExamples", "build_method"]

METHODS = ("none", "ablate", "add", "gate", "cast", "cast-adapted", "adasteer",
           "adasteer-adapted")
ADAPTED = ("gate", "cast-adapted", "adasteer-adapted")


@dataclass
class TargetExamples:
    """Rows of the b calibration examples per class, by language.

    ``rows[lang]`` is float32 of shape (2 * b, n_embd) and ``labels[lang]``
    int8 of shape (2 * b,), 1 for harmful.
    """

    rows: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)


def _readout_of(mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: float,
                basis_t: np.ndarray) -> Readout:
    return Readout(basis_t=np.ascontiguousarray(basis_t, dtype=np.float32),
                   mean=np.asarray(mean, dtype=np.float32),
                   scale=np.asarray(scale, dtype=np.float32),
                   weight=np.asarray(weight, dtype=np.float32), bias=float(bias))


def _rank_one(vector: np.ndarray, weight: float = 1.0, bias: float = 0.0) -> Readout:
    return _readout_of(np.zeros(1), np.ones(1), np.array([weight]), bias,
                       np.asarray(vector, dtype=np.float32)[None, :])


@dataclass
class MethodSetup:
    """A method ready to install on a context's hook.

    Attributes:
        name: method name from :data:`METHODS`.
        budget: target examples per class it may use (0 for zero-shot).
        per_language: language -> (readout or None, threshold) for gated methods.
    """

    name: str
    budget: int
    bundle: GateBundle
    gate_readout: Readout | None = None
    gate_options: dict[str, bool] = field(default_factory=dict)
    per_language: dict[str, tuple[Readout | None, float]] = field(default_factory=dict)
    default_threshold: float = 0.0

    @property
    def node(self) -> str:
        return f"l_out-{self.bundle.layer}"

    @property
    def label(self) -> str:
        return f"{self.name}@b{self.budget}" if self.name in ADAPTED else self.name

    def install(self, hook: Hook) -> None:
        """Add this method's operations to a hook with no other operations."""
        hook.clear()
        v = np.asarray(self.bundle.v_hrl, dtype=np.float32)
        if self.name == "ablate":
            hook.ablate(self.node, v)
        elif self.name == "add":
            hook.add(self.node, v, self.bundle.alpha, rows=Rows.LAST_PROMPT | Rows.GENERATED)
        elif self.gate_readout is not None:
            hook.gate(self.node, self.gate_readout, v, self.bundle.alpha)
            if self.gate_options:
                hook.set_gate_options(**self.gate_options)

    def configure(self, hook: Hook, seq: int, lang: str) -> None:
        """Set a sequence's readout and threshold before its prompt is prefilled."""
        if self.gate_readout is None:
            return
        readout, threshold = self.per_language.get(lang, (None, self.default_threshold))
        hook.configure_sequence(seq, threshold=threshold, readout=readout)

    def route_of(self, hook: Hook, seq: int) -> tuple[str, float | None]:
        if self.gate_readout is None:
            return ("all" if self.name != "none" else "none", None)
        decision = hook.decision(seq)
        return (decision.route.name.lower(), decision.logit)


def _paired_pc1(store: ActivationStore, layer: int, sources: tuple[str, ...]) -> np.ndarray:
    """First principal component of harmful-minus-harmless rows paired by index per language."""
    features, labels, langs = store.features(layer)
    langs = np.asarray(langs)
    diffs = []
    for lang in sources:
        harmful = features[(langs == lang) & (labels == 1)]
        harmless = features[(langs == lang) & (labels == 0)]
        n = min(len(harmful), len(harmless))
        diffs.append(harmful[:n].astype(np.float64) - harmless[:n])
    stacked = np.concatenate(diffs)
    _, _, vt = np.linalg.svd(stacked - stacked.mean(axis=0), full_matrices=False)
    pc1 = vt[0]
    if pc1 @ stacked.mean(axis=0) < 0:
        pc1 = -pc1
    return (pc1 / np.linalg.norm(pc1)).astype(np.float32)


def _cosines(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    return rows @ vector / np.maximum(np.linalg.norm(rows, axis=1), 1e-12)


def build_method(name: str, budget: int, bundle: GateBundle, langs: list[str],
                 examples: TargetExamples, train: ActivationStore | None = None,
                 val: ActivationStore | None = None) -> MethodSetup:
    """Prepare a method for the given languages.

    Args:
        name: from :data:`METHODS`.
        budget: examples per class for adapted methods; ignored otherwise.
        bundle: the fitted gate, whose layer, ``v_HRL`` and alpha all methods share.
        langs: languages that will be evaluated.
        examples: the target examples of each language (needed when budget > 0).
        train, val: source-language activations, needed by cast and adasteer.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    budget = budget if name in ADAPTED else 0
    setup = MethodSetup(name, budget, bundle)
    if name in ("none", "ablate", "add"):
        return setup
    if name == "gate":
        return _build_gate(setup, langs, examples)
    if train is None or val is None:
        raise ValueError(f"method {name} needs source-language train and val activations "
                         "(--train-acts and --val-acts)")
    if name.startswith("cast"):
        return _build_cast(setup, langs, examples, train, val)
    return _build_adasteer(setup, langs, examples, train)


def _build_gate(setup: MethodSetup, langs: list[str], examples: TargetExamples) -> MethodSetup:
    bundle = setup.bundle
    default = bundle.default
    setup.gate_readout = _readout_of(default.mean, default.scale, default.weight, default.bias,
                                     bundle.basis_t)
    setup.default_threshold = default.threshold
    if setup.budget == 0:
        return setup
    for lang in langs:
        if lang in bundle.source_languages or lang not in examples.rows:
            continue
        rows, labels = _take_budget(examples, lang, setup.budget)
        calibration = calibrate_language(lang, rows, labels, basis_t=bundle.basis_t,
                                         train_z=bundle.train_z,
                                         train_labels=bundle.train_labels, C=bundle.C)
        fitted = calibration.readout
        setup.per_language[lang] = (
            _readout_of(fitted.mean_, fitted.scale_, fitted.coef_, fitted.intercept_,
                        bundle.basis_t), calibration.threshold)
    return setup


def _take_budget(examples: TargetExamples, lang: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = examples.rows[lang], examples.labels[lang]
    keep = np.concatenate([np.flatnonzero(labels == 1)[:budget],
                           np.flatnonzero(labels == 0)[:budget]])
    if len(keep) != 2 * budget:
        raise ValueError(f"{lang!r} has fewer than {budget} calibration examples per class")
    return rows[keep], labels[keep]


def _build_cast(setup: MethodSetup, langs: list[str], examples: TargetExamples,
                train: ActivationStore, val: ActivationStore) -> MethodSetup:
    bundle = setup.bundle
    condition = _paired_pc1(train, bundle.layer, bundle.source_languages)
    setup.gate_readout = _rank_one(condition)
    setup.gate_options = {"cosine": True, "ablate_harmless": False}
    features, labels, langs_val = val.features(bundle.layer)
    source = np.isin(np.asarray(langs_val), bundle.source_languages)
    setup.default_threshold, _ = choose_threshold(_cosines(features[source], condition),
                                                  labels[source])
    if setup.name == "cast-adapted":
        for lang in langs:
            if lang in bundle.source_languages or lang not in examples.rows:
                continue
            rows, target = _take_budget(examples, lang, setup.budget)
            threshold, _ = choose_threshold(_cosines(rows, condition), target)
            setup.per_language[lang] = (None, threshold)
    return setup


def _fit_line(projections: np.ndarray, targets: np.ndarray,
              weights: np.ndarray) -> tuple[float, float]:
    design = np.stack([projections, np.ones_like(projections)], axis=1)
    root = np.sqrt(weights)[:, None]
    slope, intercept = np.linalg.lstsq(design * root, targets * root[:, 0], rcond=None)[0]
    return float(slope), float(intercept)


def _build_adasteer(setup: MethodSetup, langs: list[str], examples: TargetExamples,
                    train: ActivationStore) -> MethodSetup:
    bundle = setup.bundle
    v = np.asarray(bundle.v_hrl, dtype=np.float64)
    features, labels, langs_train = train.features(bundle.layer)
    source = np.isin(np.asarray(langs_train), bundle.source_languages)
    projections = features[source].astype(np.float64) @ v
    targets = labels[source].astype(np.float64)
    slope, intercept = _fit_line(projections, targets, np.ones_like(projections))
    setup.gate_readout = _rank_one(bundle.v_hrl, slope, intercept)
    setup.gate_options = {"adaptive": True}
    # Every prompt takes the steering route; the coefficient does the selecting.
    setup.default_threshold = -np.inf
    if setup.name == "adasteer-adapted":
        for lang in langs:
            if lang in bundle.source_languages or lang not in examples.rows:
                continue
            rows, target = _take_budget(examples, lang, setup.budget)
            extra = rows.astype(np.float64) @ v
            weights = np.concatenate([np.ones_like(projections),
                                      np.full(len(extra), len(projections) / len(extra))])
            a, c = _fit_line(np.concatenate([projections, extra]),
                             np.concatenate([targets, target.astype(np.float64)]), weights)
            setup.per_language[lang] = (_rank_one(bundle.v_hrl, a, c), -np.inf)
    return setup

