"""A sweep of the gate's layer and steering strength lambda.

Whether gating helps at all depends on the route: the layer the gate reads
and edits, and ``alpha``, which is proportional to lambda. For each layer
the budget-0 gate is fitted in memory on the source train activations, and
for each lambda its ``alpha`` is rescaled. With a budget b > 0, the gate
is recalibrated for each target language from b examples per class at
every layer, as ``lrgate eval`` does. Every setting then replies to the same
validation prompts (greedy replies judged for refusal) and, if asked,
a few multiple-choice questions. The ungated model is measured once, as the
baseline row.

Each setting writes to its own subfolder of the output folder
(``none/``, ``layer15_lambda1/``, ``layer15_lambda1_b4/``, ...) through :func:`run_eval` and
:func:`run_utility`, so a sweep that stops resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.data import Prompt
from lrgate_cpp.evaluate import (
    EvalJob,
    Judge,
    collect_target_examples,
    count_finished,
    load_completions,
    run_eval,
)
from lrgate_cpp.extract import ActivationStore
from lrgate_cpp.fitting import fit_gate
from lrgate_cpp.methods import MethodSetup, TargetExamples, build_method
from lrgate_cpp.metrics import summarize_refusals
from lrgate_cpp.model import Model
from lrgate_cpp.utility import UtilityJob, run_utility
from lrgate_cpp.utility_data import Question

__all__ = [
    "SweepJob",
    "count_finished_work",
    "fit_layer",
    "run_sweep",
    "scale_bundle",
    "setting_folder",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepJob:
    """Settings and prompts of a sweep.

    Attributes:
        layers: blocks to fit and steer at; each must be in both activation stores.
        lambdas: steering multipliers; alpha is proportional to lambda.
        prompts: validation prompts, harmful and harmless, with their languages.
        questions: multiple-choice questions for utility; empty skips utility.
        max_new_tokens: reply length limit in tokens (default 32).
        batch: prompts decoded together (default 8).
        n_threads: CPU threads; None uses all cores.
        sources: source languages of the fit; None uses the high-resource
            languages present in the train activations.
        rank: readout rank (default 10).
        C: inverse L2 strength of the readout (default 1.0).
        budget: examples per class for recalibrating each target language;
            0 uses the budget-0 readout everywhere.
        examples: the calibration examples of each target language, which
            must not be among ``prompts``.
    """

    layers: list[int]
    lambdas: list[float]
    prompts: list[Prompt]
    questions: list[Question] = field(default_factory=list)
    max_new_tokens: int = 32
    batch: int = 8
    n_threads: int | None = None
    sources: tuple[str, ...] | None = None
    rank: int = 10
    C: float = 1.0
    budget: int = 0
    examples: dict[str, list[Prompt]] = field(default_factory=dict)


def fit_layer(model: Model, train: ActivationStore, val: ActivationStore, layer: int,
              job: SweepJob) -> tuple[GateBundle, float]:
    """Fit the budget-0 gate at one layer with lambda 1.

    Returns:
        the bundle and the ROC AUC of its logit on the validation
        activations (NaN when they hold one class only).
    """
    features, labels, langs = train.features(layer)
    fit = fit_gate(features, labels, langs, source_languages=job.sources, rank=job.rank,
                   C=job.C, lam=1.0)
    bundle = GateBundle.from_fit(fit, model.fingerprint(), layer)
    val_features, val_labels, _ = val.features(layer)
    auc = float("nan")
    if len(set(val_labels.tolist())) == 2:
        auc = float(roc_auc_score(val_labels, fit.readout.decision_function(val_features)))
    return bundle, auc


def scale_bundle(bundle: GateBundle, lam: float) -> GateBundle:
    """Return a copy of ``bundle`` whose alpha is rescaled to multiplier ``lam``."""
    if lam < 0:
        raise ValueError(f"lambda must be >= 0; got {lam}")
    if bundle.lam <= 0:
        raise ValueError(f"the bundle's lambda is {bundle.lam}; rescaling needs a positive one")
    return dataclasses.replace(bundle, lam=float(lam), alpha=bundle.alpha * lam / bundle.lam)


def setting_folder(layer: int | None, lam: float | None, budget: int = 0) -> str:
    """Name the subfolder of one setting: ``none``, ``layer15_lambda0.5`` or ``..._b4``.

    A budget changes the evaluated prompts (its examples are held out), so
    its settings, the baseline included, get folders of their own.
    """
    name = "none" if layer is None else f"layer{layer}_lambda{lam:g}"
    return f"{name}_b{budget}" if budget else name


def count_finished_work(out: Path, job: SweepJob) -> int:
    """Count the replies and multiple-choice answers of ``job`` already in ``out``."""
    folders = [setting_folder(None, None, job.budget)] + [
        setting_folder(layer, lam, job.budget) for layer in job.layers for lam in job.lambdas]
    finished = 0
    for name in folders:
        records = load_completions(out / name / "completions.jsonl")
        finished += count_finished(records, sorted({r["method"] for r in records}), job.prompts)
        answers = out / name / "answers.jsonl"
        if job.questions and answers.exists():
            lines = answers.read_text(encoding="utf-8").splitlines()
            finished += min(len(lines), len(job.questions))
    return finished


def run_sweep(model: Model, train: ActivationStore, val: ActivationStore, job: SweepJob,
              out: Path, judge: Judge,
              on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Measure refusal, Delta and (optionally) utility for every (layer, lambda).

    Args:
        model: the loaded model; the activations must come from it.
        train, val: source-language activations at every layer of ``job.layers``.
        job: the settings and the prompts.
        out: output folder; each setting resumes from its subfolder.
        judge: returns True for each reply that refuses.
        on_progress: called with the number of prompts or questions done.

    Returns:
        one row per setting, the ungated baseline first (layer None).
    """
    _check_inputs(model, train, val, job)
    langs = sorted({p.lang for p in job.prompts})
    eval_job = EvalJob(job.prompts, job.max_new_tokens, job.batch, job.n_threads)
    utility_job = UtilityJob(job.questions, job.batch, job.n_threads)

    bundles = {layer: fit_layer(model, train, val, layer, job) for layer in job.layers}
    first = bundles[job.layers[0]][0]
    baseline = build_method("none", 0, first, langs, TargetExamples())
    rows = [_measure(model, baseline, "none", None, None, float("nan"), eval_job, utility_job,
                     out / setting_folder(None, None, job.budget), judge, on_progress)]
    for layer in job.layers:
        bundle, auc = bundles[layer]
        target = TargetExamples()
        if job.budget:
            target = collect_target_examples(model, layer, job.examples, job.n_threads)
        for lam in job.lambdas:
            setup = build_method("gate", job.budget, scale_bundle(bundle, lam), langs, target)
            rows.append(_measure(model, setup, "gate", layer, lam, auc, eval_job, utility_job,
                                 out / setting_folder(layer, lam, job.budget), judge,
                                 on_progress))
            log.info("layer %d lambda %g: Delta %.1f points", layer, lam, rows[-1]["delta"])
    return rows


def _check_inputs(model: Model, train: ActivationStore, val: ActivationStore,
                  job: SweepJob) -> None:
    if not job.layers or not job.lambdas:
        raise ValueError("a sweep needs at least one layer and one lambda")
    if not job.prompts:
        raise ValueError("a sweep needs validation prompts")
    if job.budget < 0:
        raise ValueError(f"budget must be >= 0; got {job.budget}")
    evaluated = {(p.lang, p.text) for p in job.prompts}
    overlap = [p.text for chosen in job.examples.values() for p in chosen
               if (p.lang, p.text) in evaluated]
    if overlap:
        raise ValueError(f"{len(overlap)} calibration examples are also validation prompts, "
                         f"for example {overlap[0][:60]!r}; hold them out")
    fingerprint = model.fingerprint()
    for name, store in (("train", train), ("val", val)):
        if not store.fingerprint.matches(fingerprint):
            raise ValueError(f"the {name} activations in {store.path} come from "
                             f"{store.fingerprint.describe()}, not the loaded "
                             f"{fingerprint.describe()}; extract them with this model")
        missing = [layer for layer in job.layers if layer not in store.layers]
        if missing:
            raise ValueError(f"layers {missing} are not in the {name} activations {store.path} "
                             f"(stored: {store.layers}); extract them or drop them")


def _measure(model: Model, setup: MethodSetup, condition: str, layer: int | None,
             lam: float | None, auc: float, eval_job: EvalJob, utility_job: UtilityJob,
             folder: Path, judge: Judge,
             on_progress: Callable[[int], None] | None) -> dict:
    records = run_eval(model, [setup], eval_job, folder, judge, on_progress)
    harmful = [r for r in records if r["label"] == "harmful"]
    harmless = [r for r in records if r["label"] == "harmless"]
    summary = summarize_refusals([r["refused"] for r in harmful],
                                 [r["refused"] for r in harmless])
    row = {
        "layer": layer, "lambda": lam,
        "alpha": None if layer is None else setup.bundle.alpha,
        "val_auc": None if np.isnan(auc) else auc,
        "n_harmful": summary.n_harmful, "n_harmless": summary.n_harmless,
        "harmful_refusal": summary.harmful, "harmless_refusal": summary.harmless,
        "delta": summary.delta, "delta_ci": list(summary.delta_ci),
        "routed_harmful_of_harmful": _percent_routed(harmful),
        "routed_harmful_of_harmless": _percent_routed(harmless),
        "utility_n": 0, "utility_accuracy": None,
    }
    if utility_job.questions:
        answers = run_utility(model, {condition: setup}, utility_job, folder, on_progress)
        row["utility_n"] = len(answers)
        row["utility_accuracy"] = 100.0 * float(np.mean([a["correct"] for a in answers]))
    return row


def _percent_routed(records: Sequence[dict]) -> float | None:
    if not records or records[0]["route"] == "none":
        return None
    return 100.0 * float(np.mean([r["route"] == "harmful" for r in records]))
