"""``lrgate sweep``: refusal, Delta and utility over the gate's layer and lambda."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from lrgate_cpp.cli.common import (
    batch_option,
    data_root_option,
    load_model,
    model_option,
    parse_languages,
    progress_bar,
    require_data_root,
    threads_option,
)
from lrgate_cpp.evaluate import RunSettingsError, check_run_settings
from lrgate_cpp.extract import ActivationStore
from lrgate_cpp.sources import load_language
from lrgate_cpp.sweep import SweepJob, count_finished_work, run_sweep
from lrgate_cpp.sweep_report import write_sweep_report
from lrgate_cpp.utility_data import SIB_CODES, load_sib200


def _parse_numbers(text: str, option: str, kind: type) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint=option) from error
    if not values or min(values) < 0:
        raise click.BadParameter(f"{text!r} must list numbers >= 0", param_hint=option)
    return list(dict.fromkeys(values))


def _open_store(path: Path, option: str) -> ActivationStore:
    try:
        return ActivationStore(path)
    except (FileNotFoundError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint=option) from error


@click.command("sweep")
@model_option
@click.option("--train-acts", required=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Source train activations at every swept layer (from `lrgate extract`).")
@click.option("--val-acts", required=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Source validation activations, for the validation AUC per layer.")
@data_root_option
@click.option("--layers", required=True, metavar="L1,L2", help="Blocks to sweep, e.g. 11,15,19.")
@click.option("--lambdas", default="0.5,1,2", show_default=True, metavar="X1,X2",
              help="Steering multipliers; alpha is proportional to lambda.")
@click.option("--langs", default="en,th,yo", show_default=True, metavar="CODES",
              help="Languages of the validation prompts.")
@click.option("--limit", type=click.IntRange(1), default=4, show_default=True, metavar="N",
              help="Validation prompts per label and language.")
@click.option("--budget", type=click.IntRange(0, 8), default=0, show_default=True, metavar="B",
              help="Calibration examples per class for each language absent from the train "
                   "activations, taken from the start of its validation split and left out "
                   "of the evaluated prompts; 0 uses the budget-0 readout everywhere.")
@click.option("--utility-langs", default="", metavar="CODES",
              help="SIB-200 languages for a utility check per setting [default: none].")
@click.option("--utility-limit", type=click.IntRange(1, 204), default=7, show_default=True,
              metavar="N", help="SIB-200 sentences per utility language.")
@click.option("--max-tokens", type=click.IntRange(1, 1024), metavar="N", default=32,
              show_default=True, help="Reply length limit in tokens.")
@batch_option
@threads_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="DIR", help="Run folder; an unfinished sweep there resumes.")
def sweep(model_spec: str, train_acts: Path, val_acts: Path, data_root: Path | None,
          layers: str, lambdas: str, langs: str, limit: int, budget: int, utility_langs: str,
          utility_limit: int, max_tokens: int, batch: int, threads: int | None,
          out: Path) -> None:
    """Sweep the gate's layer and lambda on validation prompts.

    For each layer the budget-0 gate is fitted in memory on the train
    activations; for each lambda its alpha is rescaled. Every setting, and
    the model without the gate, answers the same validation prompts
    (greedy, judged by the multilingual lexicon judge) and optionally a few
    SIB-200 questions. Writes sweep.json, sweep.md and sweep_delta.png, a
    heat map of Delta over layer and lambda. Running the same command again
    resumes.
    """
    layer_list = _parse_numbers(layers, "--layers", int)
    lambda_list = _parse_numbers(lambdas, "--lambdas", float)
    root = require_data_root(data_root)
    train = _open_store(train_acts, "--train-acts")
    val = _open_store(val_acts, "--val-acts")
    prompts, examples = [], {}
    trained = {p.lang for p in train.prompts}
    for lang in parse_languages(langs):
        n_examples = budget if lang not in trained else 0
        try:
            loaded = load_language(root, lang, "val", limit + n_examples)
        except FileNotFoundError as error:
            raise click.ClickException(str(error)) from error
        for label in ("harmful", "harmless"):
            of_label = [p for p in loaded if p.label == label]
            if len(of_label) <= n_examples:
                raise click.BadParameter(
                    f"{lang} has {len(of_label)} {label} validation prompts, not enough for "
                    f"{n_examples} calibration examples and at least one evaluated prompt",
                    param_hint="--budget")
            examples.setdefault(lang, []).extend(of_label[:n_examples])
            prompts += of_label[n_examples:]
    examples = {lang: chosen for lang, chosen in examples.items() if chosen}
    questions = []
    if utility_langs:
        for lang in parse_languages(utility_langs, "--utility-langs"):
            if lang not in SIB_CODES:
                raise click.BadParameter(f"SIB-200 has no data for {lang}",
                                         param_hint="--utility-langs")
            try:
                questions += load_sib200(root, lang, utility_limit)
            except (FileNotFoundError, ValueError) as error:
                raise click.ClickException(str(error)) from error
    model = load_model(model_spec)
    settings = {"model": model.fingerprint().describe(), "model_file": model.path.name,
                "train_acts": str(train_acts.resolve()), "max_tokens": max_tokens,
                "judge": "lexicon"}
    try:
        check_run_settings(out, settings)
    except RunSettingsError as error:
        raise click.ClickException(str(error)) from error

    from lrgate_cpp.judge_lexicon import is_refusal_batch

    job = SweepJob(layer_list, lambda_list, prompts, questions, max_tokens, batch, threads,
                   budget=budget, examples=examples)
    settings = 1 + len(layer_list) * len(lambda_list)
    started = time.perf_counter()
    with progress_bar(settings * (len(prompts) + len(questions)), "sweep",
                      initial=count_finished_work(out, job)) as bar:
        try:
            rows = run_sweep(model, train, val, job, out, is_refusal_batch,
                             on_progress=bar.update)
        except ValueError as error:
            raise click.ClickException(str(error)) from error
    seconds = time.perf_counter() - started
    command = "lrgate " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    header = [
        f"# Layer and lambda sweep: {model.name}", "", f"Command: `{command}`", "",
        f"Validation prompts: {len(prompts)} per setting ({limit} per label in "
        f"{', '.join(sorted({p.lang for p in prompts}))}), greedy, {max_tokens} tokens, "
        "judged by the multilingual lexicon judge. "
        + (f"The gate is recalibrated with {budget} example{'s' * (budget > 1)} per class in "
           f"{', '.join(sorted(examples))} (held out of the evaluated prompts) and uses its "
           "budget-0 readout elsewhere. " if examples else
           "The gate uses its budget-0 readout in every language. ")
        + f"Utility: {len(questions)} SIB-200 questions per setting. Wall "
        f"time of this run: {seconds:.0f} s for the settings not already in the run folder.",
    ]
    extra = {"command": command, "model": model.name, "wall_seconds": round(seconds, 1),
             "prompts_per_setting": len(prompts), "questions_per_setting": len(questions)}
    paths = write_sweep_report(rows, out, header, extra)
    best = max((r for r in rows if r["layer"] is not None), key=lambda r: r["delta"])
    click.echo(f"best Delta {best['delta']:.1f} points at layer {best['layer']}, lambda "
               f"{best['lambda']:g} (without the gate {rows[0]['delta']:.1f}); wrote "
               + ", ".join(p.name for p in paths))
