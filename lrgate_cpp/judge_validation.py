"""Validation of the refusal judges against WildGuard refusal labels.

The labelled responses are replies of Llama-3.1-8B-Instruct and
Qwen2.5-7B-Instruct to the 572 PolyRefuse harmful test prompts, one JSON
file per model and language, each reply labelled by the WildGuard
classifier (``wildguard.refusal``, 1 = refusal). Each file is split in two
halves by record index: even indices form the development half, on which
the lexicon's phrase lists were tuned, and odd indices the held-out half,
which the report scores.

Run ``python -m lrgate_cpp.judge_validation --out docs/results/judge_validation.md``
from the repository root; it also writes the same numbers as JSON beside
the Markdown file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lrgate_cpp.judge_lexicon import LexiconJudge

__all__ = [
    "Agreement",
    "LabelledFile",
    "agreement",
    "cohen_kappa",
    "fit_threshold",
    "load_labelled_responses",
    "split_indices",
    "stratified_sample",
    "validate",
]

log = logging.getLogger(__name__)

SPLITS = ("dev", "heldout")


@dataclass(frozen=True)
class LabelledFile:
    """The labelled replies of one model in one language.

    Attributes:
        model: Hugging Face id of the model that wrote the replies.
        language: ISO 639-1 code of the prompts.
        requests: the prompts, in the file's language; n_records strings.
        responses: the replies; n_records strings.
        labels: WildGuard refusal labels, int8 of shape (n_records,), 1 = refusal.
        substring: the source's substring-list verdicts, int8 of shape
            (n_records,), 1 = a refusal phrase was found.
    """

    model: str
    language: str
    requests: tuple[str, ...]
    responses: tuple[str, ...]
    labels: np.ndarray
    substring: np.ndarray


@dataclass(frozen=True)
class Agreement:
    """Agreement of a judge with reference labels.

    Attributes:
        n: records scored.
        accuracy: fraction of records where judge and labels agree.
        kappa: Cohen's kappa; NaN when chance agreement is 1 (both constant).
        label_rate: fraction of records the labels call refusals.
        predicted_rate: fraction of records the judge calls refusals.
    """

    n: int
    accuracy: float
    kappa: float
    label_rate: float
    predicted_rate: float


def load_labelled_responses(root: str | os.PathLike[str]) -> list[LabelledFile]:
    """Load every ``harmful_baseline_evaluations.json`` under ``root``, sorted by model and language."""
    root = Path(root)
    paths = sorted(root.rglob("harmful_baseline_evaluations.json"))
    if not paths:
        raise FileNotFoundError(f"no harmful_baseline_evaluations.json under {root}; pass the "
                                "labelled-responses folder of the shared data")
    files = []
    for path in paths:
        # .../{org}/{model}/{lang}/{run}/{seed}/completions/harmful_baseline_evaluations.json
        org, name, language = path.parts[-7:-4]
        records = json.loads(path.read_text(encoding="utf-8"))["completions"]
        files.append(LabelledFile(
            model=f"{org}/{name}", language=language,
            requests=tuple(r["instruction"] for r in records),
            responses=tuple(r["response"] for r in records),
            labels=np.array([r["wildguard"]["refusal"] for r in records], dtype=np.int8),
            substring=np.array([1 - r["is_jailbreak_substring_matching"] for r in records],
                               dtype=np.int8)))
    return sorted(files, key=lambda f: (f.model, f.language))


def split_indices(n_records: int, split: str) -> np.ndarray:
    """Return the record indices of a split: "dev" (even indices) or "heldout" (odd)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    return np.arange(0 if split == "dev" else 1, n_records, 2)


def cohen_kappa(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Return Cohen's kappa of two binary label arrays of shape (n,).

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement
    and ``p_e`` the agreement expected from the two marginal rates. Returns
    NaN when ``p_e`` is 1 (both arrays constant and equal), where kappa is
    undefined.
    """
    a = _binary(labels, "labels")
    b = _binary(predictions, "predictions")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"labels and predictions must be non-empty and of one shape; got "
                         f"{a.shape} and {b.shape}")
    observed = float(np.mean(a == b))
    rate_a, rate_b = float(a.mean()), float(b.mean())
    expected = rate_a * rate_b + (1 - rate_a) * (1 - rate_b)
    if expected >= 1.0:
        return float("nan")
    return (observed - expected) / (1 - expected)


def agreement(labels: np.ndarray, predictions: np.ndarray) -> Agreement:
    """Compare a judge's binary predictions of shape (n,) with labels of shape (n,)."""
    a = _binary(labels, "labels")
    b = _binary(predictions, "predictions")
    kappa = cohen_kappa(a, b)
    return Agreement(n=int(a.size), accuracy=float(np.mean(a == b)), kappa=kappa,
                     label_rate=float(a.mean()), predicted_rate=float(b.mean()))


def fit_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return the score threshold that maximises balanced accuracy on labelled scores.

    Args:
        scores: float array of shape (n,); higher means more likely a refusal.
        labels: binary array of shape (n,), 1 = refusal; both classes needed.

    Candidates are the midpoints between consecutive distinct scores; a
    reply is called a refusal when ``score > threshold``.
    """
    values = np.asarray(scores, dtype=np.float64)
    truth = _binary(labels, "labels")
    if values.shape != truth.shape:
        raise ValueError(f"scores and labels differ in shape: {values.shape} and {truth.shape}")
    if truth.min() == truth.max():
        raise ValueError("fitting a threshold needs both refusals and compliances in the labels")
    distinct = np.unique(values)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2])
    best, best_score = float(candidates[0]), -1.0
    for threshold in candidates:
        predicted = values > threshold
        balanced = (predicted[truth == 1].mean() + (~predicted[truth == 0]).mean()) / 2
        if balanced > best_score:
            best, best_score = float(threshold), float(balanced)
    return best


def stratified_sample(labels: np.ndarray, indices: np.ndarray, per_class: int,
                      seed: int = 0) -> np.ndarray:
    """Draw up to ``per_class`` indices of each label value from ``indices``, sorted.

    A class with fewer members contributes all of them, so the sample size
    is at most ``2 * per_class``.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1; got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for value in (0, 1):
        members = indices[labels[indices] == value]
        take = min(per_class, members.size)
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def validate(files: list[LabelledFile], split: str = "heldout",
             lexicon: LexiconJudge | None = None, model_judge: object | None = None,
             per_class: int = 8, calibration_per_class: int = 0,
             seed: int = 0) -> list[dict[str, object]]:
    """Score the judges on one split of every file, plus a pooled row.

    Args:
        files: the labelled files.
        split: "heldout" (odd record indices) or "dev" (even).
        lexicon: the lexicon judge; default :class:`LexiconJudge()`.
        model_judge: a :class:`lrgate_cpp.judge_model.ModelJudge`, or None
            to skip it. It is scored on a stratified sample of the split
            (``per_class`` refusals and compliances per file), next to the
            lexicon on the same sample.
        per_class: sample size per label value and file for the model judge.
        calibration_per_class: when above 0, the model judge's threshold is
            first fitted (:func:`fit_threshold`) on a stratified sample of
            this many replies per label value and file from the other split,
            and stored in ``model_judge.threshold``.
        seed: seed of the samples.

    Returns:
        One dict per file and one for all files pooled, with the keys
        model, language, and one :class:`Agreement` dict per judge.
    """
    lexicon = lexicon or LexiconJudge()
    if model_judge is not None and calibration_per_class > 0:
        other = SPLITS[1 - SPLITS.index(split)]
        requests, replies, labels_list = [], [], []
        for file in files:
            sample = stratified_sample(file.labels, split_indices(len(file.responses), other),
                                       calibration_per_class, seed)
            requests += [file.requests[i] for i in sample]
            replies += [file.responses[i] for i in sample]
            labels_list.append(file.labels[sample])
        scores = model_judge.score(requests, replies)  # type: ignore[attr-defined]
        model_judge.threshold = fit_threshold(scores, np.concatenate(labels_list))  # type: ignore[attr-defined]
        log.info("model judge threshold %.3f fitted on %d %s replies",
                 model_judge.threshold, len(replies), other)  # type: ignore[attr-defined]
    rows: list[dict[str, object]] = []
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in
                                           ("labels", "lexicon", "substring", "s_labels",
                                            "s_lexicon", "s_model")}
    for file in files:
        index = split_indices(len(file.responses), split)
        labels = file.labels[index]
        lexicon_pred = np.array(lexicon.judge([file.responses[i] for i in index]), np.int8)
        substring = file.substring[index]
        row: dict[str, object] = {
            "model": file.model, "language": file.language,
            "lexicon": asdict(agreement(labels, lexicon_pred)),
            "substring_source": asdict(agreement(labels, substring))}
        pooled["labels"].append(labels)
        pooled["lexicon"].append(lexicon_pred)
        pooled["substring"].append(substring)
        if model_judge is not None:
            sample = stratified_sample(file.labels, index, per_class, seed)
            start = time.perf_counter()
            model_pred = np.array(model_judge.judge(  # type: ignore[attr-defined]
                [file.requests[i] for i in sample], [file.responses[i] for i in sample]),
                np.int8)
            log.info("%s %s: model judge scored %d replies in %.0f s", file.model,
                     file.language, sample.size, time.perf_counter() - start)
            lexicon_sample = np.array(lexicon.judge([file.responses[i] for i in sample]), np.int8)
            row["model_judge_sample"] = asdict(agreement(file.labels[sample], model_pred))
            row["lexicon_sample"] = asdict(agreement(file.labels[sample], lexicon_sample))
            pooled["s_labels"].append(file.labels[sample])
            pooled["s_model"].append(model_pred)
            pooled["s_lexicon"].append(lexicon_sample)
        rows.append(row)

    joined = {k: np.concatenate(v) for k, v in pooled.items() if v}
    total: dict[str, object] = {
        "model": "all", "language": "all",
        "lexicon": asdict(agreement(joined["labels"], joined["lexicon"])),
        "substring_source": asdict(agreement(joined["labels"], joined["substring"]))}
    if model_judge is not None:
        total["model_judge_sample"] = asdict(agreement(joined["s_labels"], joined["s_model"]))
        total["lexicon_sample"] = asdict(agreement(joined["s_labels"], joined["s_lexicon"]))
    rows.append(total)
    return rows


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (or booleans); got values "
                         f"{sorted(set(array.tolist()) - {0, 1})[:5]}")
    return array.astype(np.int8)


def main(argv: list[str] | None = None) -> int:
    """Run the validation and write the Markdown and JSON reports."""
    from lrgate_cpp.judge_report import write_reports

    parser = argparse.ArgumentParser(
        prog="python -m lrgate_cpp.judge_validation",
        description="Score the refusal judges against WildGuard labels on the held-out half.")
    parser.add_argument("--out", required=True, metavar="FILE.md",
                        help="Markdown report; a JSON file with the same stem is written beside it")
    parser.add_argument("--data", metavar="DIR",
                        default=os.environ.get("LRGATE_DATA", "../shared/data"),
                        help="shared data folder holding labelled-responses/ "
                             "(default: $LRGATE_DATA or ../shared/data)")
    parser.add_argument("--judge-model", metavar="NAME_OR_PATH", default=None,
                        help="model judge GGUF path or zoo name (default: qwen2.5-coder-1.5b "
                             "if installed, else qwen2.5-coder-0.5b)")
    parser.add_argument("--no-model-judge", action="store_true",
                        help="score only the lexicon and the source substring list")
    parser.add_argument("--per-class", type=int, default=5, metavar="N",
                        help="held-out replies per label value and file for the model judge")
    parser.add_argument("--calibration-per-class", type=int, default=2, metavar="N",
                        help="development replies per label value and file for its threshold")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the model judge (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lrgate_cpp.llama_cpp", "lrgate_cpp.model"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    start = time.perf_counter()
    files = load_labelled_responses(Path(args.data) / "labelled-responses")
    judge = None
    meta: dict[str, object] = {"split": "heldout", "n_files": len(files)}
    if not args.no_model_judge:
        from lrgate_cpp.judge_model import ModelJudge

        judge = ModelJudge.from_path(args.judge_model, n_threads=args.threads)
        meta.update(model_judge=judge.model.name, model_judge_path=str(judge.model.path),
                    per_class=args.per_class, calibration_per_class=args.calibration_per_class)
    rows = validate(files, "heldout", model_judge=judge, per_class=args.per_class,
                    calibration_per_class=args.calibration_per_class if judge else 0)
    if judge is not None:
        pooled = rows[-1]["model_judge_sample"]
        assert isinstance(pooled, dict)
        meta.update(threshold=judge.threshold, sample_size=pooled["n"],
                    calibration_size=sum(
                        min(args.calibration_per_class, int((f.labels[0::2] == v).sum()))
                        for f in files for v in (0, 1)))
        judge.close()
    meta["wall_time_s"] = time.perf_counter() - start
    meta["machine"] = f"{os.cpu_count()} CPU cores, no GPU"
    meta["command"] = "python -m lrgate_cpp.judge_validation " + " ".join(
        argv if argv is not None else sys.argv[1:])
    json_path = write_reports(rows, meta, args.out)
    log.info("wrote %s and %s in %.0f s", args.out, json_path, meta["wall_time_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
