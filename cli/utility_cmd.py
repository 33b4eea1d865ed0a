"""``lrgate utility``: multiple-choice accuracy with and without the gate."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from lrgate_cpp.cli.common import (
    check_bundle_model,
    batch_option,
    bundle_option,
    load_bundle,
    data_root_option,
    load_model,
    bundle_model_option,
    model_spec_for,
    parse_languages,
    progress_bar,
    require_data_root,
    threads_option,
)
from lrgate_cpp.methods import TargetExamples, build_method
from lrgate_cpp.utility import UtilityJob, bundle_gate, run_utility
from lrgate_cpp.utility_data import MMLU_SUBJECTS, SIB_CODES, Question, load_mmlu, load_sib200
from lrgate_cpp.utility_report import write_utility_report

DATASETS = ("mmlu", "sib200")


def _split_names(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise click.BadParameter(f"unknown {', '.join(unknown) or 'empty list'}; choose from "
                                 f"{', '.join(allowed)}", param_hint=option)
    return names


def load_questions(root: Path, datasets: list[str], mmlu_langs: list[str],
                   subjects: list[str], mmlu_limit: int, sib_langs: list[str],
                   sib_limit: int) -> list[Question]:
    """Load the questions of the chosen datasets, turning loader errors into usage errors."""
    questions: list[Question] = []
    try:
        if "mmlu" in datasets:
            for lang in mmlu_langs:
                for subject in subjects:
                    questions += load_mmlu(root, subject, lang, "test", mmlu_limit)
        if "sib200" in datasets:
            for lang in sib_langs:
                questions += load_sib200(root, lang, sib_limit)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    return questions


@click.command("utility")
@bundle_model_option
@bundle_option
@data_root_option
@click.option("--datasets", default="mmlu,sib200", show_default=True, metavar="NAMES",
              help=f"Comma-separated: {', '.join(DATASETS)}.")
@click.option("--mmlu-langs", default="en,am", show_default=True, metavar="CODES",
              help="MMLU languages (files exist for en and am, among others).")
@click.option("--mmlu-subjects", default=",".join(MMLU_SUBJECTS), show_default=True,
              metavar="NAMES", help="MMLU subjects, comma-separated.")
@click.option("--mmlu-limit", type=click.IntRange(1), default=20, show_default=True,
              metavar="N", help="Test questions per MMLU subject and language.")
@click.option("--sib-langs", default="all", show_default=True, metavar="CODES",
              help="SIB-200 languages; codes, or high, mid, low, all.")
@click.option("--sib-limit", type=click.IntRange(1, 204), default=10, show_default=True,
              metavar="N", help="Sentences per SIB-200 language, spread over the 7 topics.")
@click.option("--conditions", default="none,gate", show_default=True, metavar="NAMES",
              help="none (no intervention) and gate (the bundle's gate per language).")
@click.option("--batch", type=click.IntRange(1, 64), metavar="N", default=8, show_default=True,
              help="Questions prefilled together.")
@threads_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="DIR", help="Run folder; an unfinished run there resumes.")
def utility(model_spec: str, bundle_path: Path, data_root: Path | None, datasets: str,
            mmlu_langs: str, mmlu_subjects: str, mmlu_limit: int, sib_langs: str,
            sib_limit: int, conditions: str, batch: int, threads: int | None,
            out: Path) -> None:
    """Measure multiple-choice accuracy with and without the gate.

    Each question is asked through the chat template with lettered options
    and scored from the logits of the option letters at the first reply
    token, so no text is generated. The gated condition uses the bundle's
    readout and threshold for the question's language. Answers are saved
    to OUT/answers.jsonl as they finish, so running the same command again
    resumes. Writes utility.json and utility.md.
    """
    dataset_list = _split_names(datasets, DATASETS, "--datasets")
    subjects = _split_names(mmlu_subjects, MMLU_SUBJECTS, "--mmlu-subjects")
    condition_list = _split_names(conditions, ("none", "gate"), "--conditions")
    sib_list = parse_languages(sib_langs, "--sib-langs")
    missing = [lang for lang in sib_list if lang not in SIB_CODES]
    if missing:
        raise click.BadParameter(f"SIB-200 has no data for {', '.join(missing)}",
                                 param_hint="--sib-langs")
    root = require_data_root(data_root)
    questions = load_questions(root, dataset_list, parse_languages(mmlu_langs, "--mmlu-langs"),
                               subjects, mmlu_limit, sib_list, sib_limit)
    bundle = load_bundle(bundle_path)
    model = load_model(model_spec_for(model_spec, bundle))
    check_bundle_model(bundle, model)

    langs = sorted({q.lang for q in questions})
    setups = {"none": build_method("none", 0, bundle, langs, TargetExamples()),
              "gate": bundle_gate(bundle, langs)}
    chosen = {name: setups[name] for name in condition_list}
    started = time.perf_counter()
    with progress_bar(len(questions) * len(chosen), "utility") as bar:
        records = run_utility(model, chosen, UtilityJob(questions, batch, threads), out,
                              on_progress=bar.update)
    seconds = time.perf_counter() - started
    command = "lrgate " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    calibrated = [lang for lang in langs if lang in bundle.calibrations]
    header = [
        f"# Multiple-choice utility: {model.name}", "",
        f"Command: `{command}`", "",
        f"Model file: {model.path.name}. Bundle: {bundle_path.name}, layer {bundle.layer}, "
        f"alpha {bundle.alpha:.3g} (lambda {bundle.lam:g}). Languages with their own "
        f"calibrated readout: {', '.join(calibrated) or 'none'}; the others use the "
        "budget-0 readout.", "",
        f"Questions: {len(questions)} per condition ({_sizes(questions)}). Wall time of "
        f"this run: {seconds:.0f} s for the questions not already in the run folder.",
    ]
    extra = {"command": command, "model": model.name, "bundle": bundle_path.name,
             "layer": bundle.layer, "alpha": bundle.alpha, "calibrated_languages": calibrated,
             "questions_per_condition": len(questions), "wall_seconds": round(seconds, 1)}
    paths = write_utility_report(records, out, header, extra)
    click.echo(f"{len(records)} answers in {out} ({seconds:.0f} s this run); wrote "
               + ", ".join(p.name for p in paths))


def _sizes(questions: list[Question]) -> str:
    counts: dict[str, int] = {}
    for question in questions:
        key = f"{question.dataset} {question.lang}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{key}: {n}" for key, n in counts.items())
