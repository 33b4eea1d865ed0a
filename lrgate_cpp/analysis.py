"""The representation report: does each language still separate harm?

For each language of an extraction, it scores two readings of the
activations at the bundle's layer: the projection on ``v_HRL`` and the gate
logit of that language's readout (its calibration, or the budget-0 readout).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from lrgate_cpp.bundle import GateBundle, UncalibratedLanguageWarning
from lrgate_cpp.extract import ActivationStore
from lrgate_cpp.languages import ALL_LANGUAGES, HIGH_RESOURCE, TIERS, tier_of

__all__ = ["analyze_representation", "plot_projections", "summarize_tiers", "write_tables"]

COLUMNS = ("lang", "tier", "n_harmful", "n_harmless", "projection_auc",
           "projection_balanced_accuracy", "gate_auc", "gate_balanced_accuracy", "budget")


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def analyze_representation(bundle: GateBundle, store: ActivationStore
                           ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Score each language of ``store`` at the bundle's layer.

    The projection's balanced accuracy uses one threshold for all
    languages: the midpoint of the harmful and harmless mean projections of
    the high-resource rows in ``store`` (of all rows when it has none). The
    gate's balanced accuracy uses each language's own threshold.

    Returns:
        one row per language (keys :data:`COLUMNS`), in tier order, and the
        projections per language (float32 of shape (n_prompts,)) for plots.
    """
    features, labels, langs = store.features(bundle.layer, bundle.position)
    langs_array = np.asarray(langs)
    projections = features.astype(np.float64) @ bundle.v_hrl.astype(np.float64)
    reference = np.isin(langs_array, HIGH_RESOURCE)
    if not reference.any():
        reference = np.ones_like(reference)
    cut = 0.5 * (projections[reference & (labels == 1)].mean()
                 + projections[reference & (labels == 0)].mean())

    rows, by_lang = [], {}
    for lang in [code for code in ALL_LANGUAGES if code in set(langs)]:
        mask = langs_array == lang
        y = labels[mask]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UncalibratedLanguageWarning)
            readout, threshold = bundle.make_readout(lang)
        budget = bundle.calibrations[lang].budget if lang in bundle.calibrations else 0
        logits = readout.decision_function(features[mask])
        rows.append({
            "lang": lang, "tier": tier_of(lang), "n_harmful": int(y.sum()),
            "n_harmless": int(len(y) - y.sum()),
            "projection_auc": _auc(y, projections[mask]),
            "projection_balanced_accuracy": float(balanced_accuracy_score(y, projections[mask] >= cut)),
            "gate_auc": _auc(y, logits),
            "gate_balanced_accuracy": float(balanced_accuracy_score(y, logits >= threshold)),
            "budget": budget,
        })
        by_lang[lang] = projections[mask].astype(np.float32)
    return rows, by_lang


def summarize_tiers(rows: list[dict]) -> list[dict]:
    """Average the per-language scores within each resource tier."""
    summary = []
    for tier in TIERS:
        members = [row for row in rows if row["tier"] == tier]
        if not members:
            continue
        entry: dict = {"tier": tier, "languages": " ".join(r["lang"] for r in members)}
        for key in ("projection_auc", "projection_balanced_accuracy", "gate_auc",
                    "gate_balanced_accuracy"):
            entry[key] = float(np.nanmean([r[key] for r in members]))
        summary.append(entry)
    return summary


def write_tables(rows: list[dict], tiers: list[dict], out: Path, stem: str) -> list[Path]:
    """Write the language and tier tables as CSV and one JSON file; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}_languages.csv", out / f"{stem}_tiers.csv", out / f"{stem}.json"]
    for path, table in ((paths[0], rows), (paths[1], tiers)):
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    paths[2].write_text(json.dumps({"languages": rows, "tiers": tiers}, indent=1),
                        encoding="utf-8")
    return paths


def plot_projections(by_lang: dict[str, np.ndarray], labels_by_lang: dict[str, np.ndarray],
                     path: Path, title: str) -> Path:
    """Draw the v_HRL projections of harmful and harmless prompts, one panel per tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = [tier for tier in TIERS if any(tier_of(lang) == tier for lang in by_lang)]
    figure, axes = plt.subplots(1, len(tiers), figsize=(5 * len(tiers), 3.6), sharey=True,
                                squeeze=False)
    for axis, tier in zip(axes[0], tiers):
        langs = [lang for lang in by_lang if tier_of(lang) == tier]
        values = np.concatenate([by_lang[lang] for lang in langs])
        labels = np.concatenate([labels_by_lang[lang] for lang in langs])
        bins = np.linspace(values.min(), values.max(), 40)
        axis.hist(values[labels == 1], bins=bins, alpha=0.6, label="harmful", color="#c0392b")
        axis.hist(values[labels == 0], bins=bins, alpha=0.6, label="harmless", color="#2471a3")
        axis.set_title(f"{tier} tier: {' '.join(langs)}", fontsize=9)
        axis.set_xlabel("projection on v_HRL")
    axes[0][0].set_ylabel("prompts")
    axes[0][0].legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
