"""Fit the gate from residual-stream activations at one layer.

Inputs are activations at the last prompt token, float32 of shape
(n_samples, n_embd), with labels of shape (n_samples,) (1 harmful,
0 harmless) and language codes of shape (n_samples,). Fitting has three
stages:

1. :func:`fit_gate` estimates one direction per source language and the
   pooled direction ``v_hrl``, fits the low-rank readout, and picks the
   budget-0 threshold and the steering strength ``alpha``.
2. :func:`pick_layer` compares layers by the validation AUC of the gate logit.
3. :func:`calibrate_language` refits the readout with a few examples of a
   target language and picks that language's threshold.

A gate routes a prompt as harmful when its logit is >= the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from lrgate_cpp.languages import HIGH_RESOURCE, check_language
from lrgate_cpp.readout import LowRankReadout, check_labels

__all__ = [
    "MAX_BUDGET",
    "GateFit",
    "LanguageCalibration",
    "calibrate_language",
    "choose_threshold",
    "compute_alpha",
    "compute_direction",
    "fit_gate",
    "pick_layer",
    "score_threshold",
]

logger = logging.getLogger(__name__)

# Recalibration is few-shot; a language with more labelled prompts than this
# belongs in the training set instead.
MAX_BUDGET = 64

# Thresholds below the lowest or above the highest logit sit this far (in
# logit units) outside them, so every prompt lands clearly on one side.
_END_MARGIN = 1.0

# A direction whose norm is below this fraction of the class means' norms is
# rounding noise, not a difference between the classes.
_MIN_RELATIVE_NORM = 1e-6


@dataclass
class GateFit:
    """The budget-0 gate fitted on the source languages at one layer.

    Attributes:
        source_languages: codes whose train prompts were used, in fitting order.
        directions: float32 of shape (n_lang, n_embd), one unit direction per source language.
        v_hrl: float32 of shape (n_embd,), the unit direction pooled over all source prompts.
        readout: the fitted :class:`LowRankReadout`.
        threshold: logit threshold that maximizes balanced F1 on the train logits.
        fit_score: balanced accuracy on the train prompts at ``threshold``.
        alpha: steering strength along ``v_hrl``, in residual-stream units.
        lam: the multiplier ``alpha`` was computed with.
        train_z: float32 of shape (n_train, rank), projected train features,
            kept so that calibration can refit without the model.
        train_labels: int8 of shape (n_train,), labels of ``train_z``.
    """

    source_languages: tuple[str, ...]
    directions: np.ndarray
    v_hrl: np.ndarray
    readout: LowRankReadout
    threshold: float
    fit_score: float
    alpha: float
    lam: float
    train_z: np.ndarray
    train_labels: np.ndarray


@dataclass
class LanguageCalibration:
    """A readout and threshold recalibrated for one language.

    Attributes:
        lang: the target language code.
        budget: examples per class used.
        threshold: logit threshold chosen on the examples.
        fit_score: balanced accuracy on the examples at ``threshold``.
        readout: the refitted readout; its basis is the budget-0 basis.
    """

    lang: str
    budget: int
    threshold: float
    fit_score: float
    readout: LowRankReadout


def compute_direction(
    harmful: np.ndarray, harmless: np.ndarray, name: str = "direction"
) -> np.ndarray:
    """Return ``unit(mean(harmful) - mean(harmless))`` as float32 of shape (n_embd,).

    Args:
        harmful, harmless: activations of shape (n, n_embd), at least one row each.
        name: what the direction is for, used in error messages.

    Raises:
        ValueError: if a set is empty or the two means coincide, which leaves no direction.
    """
    if len(harmful) == 0 or len(harmless) == 0:
        raise ValueError(
            f"{name}: needs harmful and harmless examples; got {len(harmful)} harmful "
            f"and {len(harmless)} harmless"
        )
    harmful_mean = np.asarray(harmful, dtype=np.float64).mean(axis=0)
    harmless_mean = np.asarray(harmless, dtype=np.float64).mean(axis=0)
    difference = harmful_mean - harmless_mean
    norm = float(np.linalg.norm(difference))
    scale = max(float(np.linalg.norm(harmful_mean)), float(np.linalg.norm(harmless_mean)))
    if not np.isfinite(norm) or norm <= _MIN_RELATIVE_NORM * scale:
        raise ValueError(
            f"{name}: the harmful and harmless means coincide (difference norm {norm:.3g}), so "
            "there is no direction; check the labels and that the activations differ per prompt"
        )
    return (difference / norm).astype(np.float32)


def compute_alpha(
    features: np.ndarray, labels: np.ndarray, v_hrl: np.ndarray, lam: float = 1.0
) -> float:
    """Return ``lam * (q75 of harmful projections - q25 of harmless projections)`` on ``v_hrl``.

    Args:
        features: activations of shape (n_samples, n_embd).
        labels: array of shape (n_samples,), 1 harmful, 0 harmless.
        v_hrl: unit direction of shape (n_embd,).
        lam: multiplier, default 1.0.
    """
    labels = check_labels(labels, len(features))
    projections = np.asarray(features, dtype=np.float64) @ np.asarray(v_hrl, dtype=np.float64)
    harmful_q75 = np.quantile(projections[labels == 1], 0.75)
    harmless_q25 = np.quantile(projections[labels == 0], 0.25)
    spread = harmful_q75 - harmless_q25
    alpha = float(lam * spread)
    if alpha <= 0:
        logger.warning(
            "alpha is %.4g, so adding alpha * v_hrl would not push towards refusal; "
            "v_hrl separates the train prompts poorly at this layer",
            alpha,
        )
    return alpha


def choose_threshold(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Choose the logit threshold that maximizes balanced F1.

    Balanced F1 is the mean of the F1 of the harmful class and the F1 of the
    harmless class, with "harmful" predicted when ``logit >= threshold``.
    Candidates are the midpoints between consecutive distinct logits and one
    point 1.0 below the lowest and above the highest logit. Ties go to the
    candidate in the widest gap between logits, then to the one closest to 0.
    So with one example per class, ordered correctly, the threshold is the
    midpoint of their logits.

    NOTE: the midpoint of two adjacent float32 logits is not a float32
    value, so compare logits with the threshold in float64; a cast of the
    threshold to float32 can land on a logit.

    Args:
        logits: array of shape (n_samples,).
        labels: array of shape (n_samples,), 1 harmful, 0 harmless, both present.

    Returns:
        ``(threshold, balanced_f1)``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 1:
        raise ValueError(f"logits must have shape (n_samples,); got {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or inf")
    labels = check_labels(labels, len(logits))

    values = np.unique(logits)
    candidates = np.concatenate(
        [[values[0] - _END_MARGIN], (values[:-1] + values[1:]) / 2, [values[-1] + _END_MARGIN]]
    )
    gap_widths = np.concatenate([[0.0], np.diff(values), [0.0]])

    harmful = np.sort(logits[labels == 1])
    harmless = np.sort(logits[labels == 0])
    true_pos = len(harmful) - np.searchsorted(harmful, candidates, side="left")
    false_pos = len(harmless) - np.searchsorted(harmless, candidates, side="left")
    false_neg = len(harmful) - true_pos
    true_neg = len(harmless) - false_pos
    f1_harmful = 2 * true_pos / (2 * true_pos + false_pos + false_neg)
    f1_harmless = 2 * true_neg / (2 * true_neg + false_neg + false_pos)
    scores = (f1_harmful + f1_harmless) / 2

    # np.lexsort sorts by the last key first.
    best = np.lexsort((np.abs(candidates), -gap_widths, -scores))[0]
    return float(candidates[best]), float(scores[best])


def score_threshold(logits: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Return the balanced accuracy of predicting harmful when ``logit >= threshold``."""
    labels = check_labels(labels, len(logits))
    return float(balanced_accuracy_score(labels, np.asarray(logits) >= threshold))


def fit_gate(
    features: np.ndarray,
    labels: np.ndarray,
    langs: Sequence[str],
    *,
    source_languages: Sequence[str] | None = None,
    rank: int = 10,
    C: float = 1.0,
    lam: float = 1.0,
) -> GateFit:
    """Fit the budget-0 gate on train activations of the source languages.

    Args:
        features: float32 activations of shape (n_samples, n_embd).
        labels: array of shape (n_samples,), 1 harmful, 0 harmless.
        langs: language code of each row, length n_samples.
        source_languages: languages to fit on; default: the high-resource
            languages present in ``langs``, in tier order. Rows of other
            languages are left out.
        rank: readout rank, capped at the number of source languages (default 10).
        C: inverse L2 strength of the logistic regression (default 1.0).
        lam: multiplier of ``alpha`` (default 1.0).

    Raises:
        ValueError: if a source language has no rows, lacks a class, or has
            a zero-norm direction.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (n_samples, n_embd); got {features.shape}")
    labels = check_labels(labels, features.shape[0])
    langs = np.asarray(langs, dtype=str)
    if langs.shape != (features.shape[0],):
        raise ValueError(f"langs must have shape ({features.shape[0]},); got {langs.shape}")

    present = set(langs.tolist())
    if source_languages is None:
        source_languages = [code for code in HIGH_RESOURCE if code in present]
        if not source_languages:
            raise ValueError(
                f"no high-resource language among the rows (found {sorted(present)}); "
                "pass source_languages"
            )
    for code in source_languages:
        check_language(code)
        if code not in present:
            raise ValueError(f"source language {code!r} has no rows; add its prompts or drop it")
    source_languages = tuple(source_languages)

    mask = np.isin(langs, source_languages)
    if not np.all(mask):
        logger.info("leaving out %d rows of languages outside the sources", int(np.sum(~mask)))
    features, labels, langs = features[mask], labels[mask], langs[mask]
    labels = check_labels(labels, len(labels))

    directions = np.stack([
        compute_direction(
            features[(langs == code) & (labels == 1)],
            features[(langs == code) & (labels == 0)],
            name=f"direction of {code!r}",
        )
        for code in source_languages
    ])
    v_hrl = compute_direction(features[labels == 1], features[labels == 0], name="v_hrl")

    readout = LowRankReadout(rank=rank, C=C).fit(directions, features, labels)
    logits = readout.decision_function(features)
    threshold, balanced_f1 = choose_threshold(logits, labels)
    fit_score = score_threshold(logits, labels, threshold)
    alpha = compute_alpha(features, labels, v_hrl, lam)
    logger.info(
        "fitted gate on %d prompts in %s: threshold %.4g (balanced F1 %.3f), alpha %.4g",
        len(labels), " ".join(source_languages), threshold, balanced_f1, alpha,
    )
    return GateFit(
        source_languages=source_languages,
        directions=directions,
        v_hrl=v_hrl,
        readout=readout,
        threshold=threshold,
        fit_score=fit_score,
        alpha=alpha,
        lam=float(lam),
        train_z=readout.transform(features),
        train_labels=labels,
    )


def pick_layer(
    train_features: Mapping[int, np.ndarray],
    train_labels: np.ndarray,
    train_langs: Sequence[str],
    val_features: Mapping[int, np.ndarray],
    val_labels: np.ndarray,
    *,
    source_languages: Sequence[str] | None = None,
    rank: int = 10,
    C: float = 1.0,
) -> tuple[int, dict[int, float]]:
    """Pick the layer whose gate logit has the highest validation AUC.

    Args:
        train_features, val_features: activations per layer index, of shapes
            (n_train, n_embd) and (n_val, n_embd); both need the same layers.
        train_labels, train_langs, val_labels: as in :func:`fit_gate`.
        source_languages, rank, C: passed to :func:`fit_gate`.

    Returns:
        ``(layer, aucs)`` where ``aucs`` maps each layer to its validation
        ROC AUC. Ties go to the lowest layer, which needs the least compute
        before the gate can decide.
    """
    if not train_features or set(train_features) != set(val_features):
        raise ValueError(
            f"train and val activations must cover the same non-empty set of layers; got "
            f"{sorted(train_features)} and {sorted(val_features)}"
        )
    val_labels = check_labels(val_labels, len(next(iter(val_features.values()))))
    aucs = {}
    for layer in sorted(train_features):
        fit = fit_gate(
            train_features[layer], train_labels, train_langs,
            source_languages=source_languages, rank=rank, C=C,
        )
        logits = fit.readout.decision_function(val_features[layer])
        aucs[layer] = float(roc_auc_score(val_labels, logits))
        logger.info("layer %d: validation AUC %.4f", layer, aucs[layer])
    best = max(aucs, key=lambda layer: (aucs[layer], -layer))
    return best, aucs


def calibrate_language(
    lang: str,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    basis_t: np.ndarray,
    train_z: np.ndarray,
    train_labels: np.ndarray,
    C: float = 1.0,
) -> LanguageCalibration:
    """Recalibrate the readout for one language from ``b`` examples per class.

    The scaler and logistic regression are refitted on the source train
    features plus the examples, with the basis (and so ``v_hrl``) unchanged.
    The threshold is then chosen on the examples alone by
    :func:`choose_threshold`.

    Args:
        lang: target language code.
        features: float32 activations of the examples, shape (2 * b, n_embd).
        labels: array of shape (2 * b,), b ones (harmful) and b zeros.
        basis_t: float32 basis of shape (rank, n_embd) of the budget-0 gate.
        train_z: float32 projected source train features, shape (n_train, rank).
        train_labels: labels of ``train_z``, shape (n_train,).
        C: inverse L2 strength, the budget-0 gate's value (default 1.0).

    Raises:
        ValueError: if the classes have different counts or b is outside 1..MAX_BUDGET.
    """
    lang = check_language(lang)
    labels = check_labels(labels, len(features))
    n_harmful = int(labels.sum())
    n_harmless = len(labels) - n_harmful
    if n_harmful != n_harmless:
        raise ValueError(
            f"calibration for {lang!r} needs the same number of examples per class; got "
            f"{n_harmful} harmful and {n_harmless} harmless"
        )
    budget = n_harmful
    if budget > MAX_BUDGET:
        raise ValueError(
            f"calibration for {lang!r} takes 1 to {MAX_BUDGET} examples per class; got {budget}. "
            "Use fewer, or add the prompts to the training set"
        )
    readout = LowRankReadout.from_basis(basis_t, C=C)
    train_z = np.asarray(train_z, dtype=np.float32)
    if train_z.ndim != 2 or train_z.shape[1] != readout.rank:
        raise ValueError(
            f"train_z must have shape (n_train, {readout.rank}) to match basis_t; got "
            f"{train_z.shape}. Pass the train_z stored with this basis"
        )
    train_labels = check_labels(train_labels, len(train_z))

    z = readout.transform(features)
    readout.fit_projected(np.vstack([train_z, z]), np.concatenate([train_labels, labels]))
    logits = readout.decision_function(features)
    threshold, _ = choose_threshold(logits, labels)
    fit_score = score_threshold(logits, labels, threshold)
    if fit_score < 1.0:
        logger.warning(
            "calibration for %r separates its %d examples per class imperfectly "
            "(balanced accuracy %.3f)", lang, budget, fit_score,
        )
    return LanguageCalibration(lang, budget, threshold, fit_score, readout)
