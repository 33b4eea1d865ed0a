"""``lrgate eval``: refusal and selectivity of the gate against baselines."""

from __future__ import annotations

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
from lrgate_cpp.evaluate import (
    EvalJob,
    RunSettingsError,
    check_run_settings,
    collect_target_examples,
    count_finished,
    load_completions,
    run_eval,
)
from lrgate_cpp.extract import ActivationStore
from lrgate_cpp.methods import ADAPTED, METHODS, build_method
from lrgate_cpp.report import write_report
from lrgate_cpp.sources import load_language


def _parse_list(text: str, allowed: tuple[str, ...], option: str, kind: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if not items:
        raise click.BadParameter(f"no {kind} given; choose from {', '.join(allowed)}",
                                 param_hint=option)
    if unknown:
        raise click.BadParameter(f"unknown {kind} {', '.join(map(repr, unknown))}; choose from "
                                 f"{', '.join(allowed)}", param_hint=option)
    return items


def _check_settings(out: Path, settings: dict[str, object], record: bool) -> None:
    try:
        check_run_settings(out, settings, record)
    except RunSettingsError as error:
        raise click.ClickException(str(error)) from error


def _parse_budgets(text: str) -> list[int]:
    try:
        budgets = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a list like 0,1,2,4",
                                 param_hint="--budgets") from error
    if not budgets or budgets[0] < 0 or budgets[-1] > 64:
        raise click.BadParameter("budgets must be between 0 and 64", param_hint="--budgets")
    return budgets


@click.command("eval")
@bundle_model_option
@bundle_option
@data_root_option
@click.option("--langs", default="all", show_default=True, metavar="CODES",
              help="Languages to evaluate; codes, or high, mid, low, all (those with data).")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True,
              help="Data split whose prompts are evaluated.")
@click.option("--limit", type=click.IntRange(1), default=10, show_default=True, metavar="N",
              help="Prompts per label and language.")
@click.option("--methods", default="none,ablate,add,gate", show_default=True, metavar="NAMES",
              help=f"Comma-separated: {', '.join(METHODS)}.")
@click.option("--budgets", default="0,4", show_default=True, metavar="B1,B2",
              help="Examples per class for the gate and the adapted baselines.")
@click.option("--train-acts", type=click.Path(file_okay=False, exists=True, path_type=Path),
              metavar="DIR", help="Source train activations (cast, adasteer).")
@click.option("--val-acts", type=click.Path(file_okay=False, exists=True, path_type=Path),
              metavar="DIR", help="Source validation activations (cast).")
@click.option("--max-tokens", type=click.IntRange(1, 1024), metavar="N", default=48,
              show_default=True, help="Reply length limit in tokens.")
@batch_option
@threads_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="DIR", help="Run folder; an unfinished run there resumes.")
def evaluate(model_spec: str, bundle_path: Path, data_root: Path | None, langs: str, split: str,
             limit: int, methods: str, budgets: str, train_acts: Path | None,
             val_acts: Path | None, max_tokens: int, batch: int, threads: int | None,
             out: Path) -> None:
    """Measure refusal of harmful and harmless prompts per method and language.

    Replies are greedy, judged by the multilingual lexicon judge, and saved
    to OUT/completions.jsonl as they finish; running the same command again
    resumes. Writes summary.json, summary.csv, summary.md and two plots.
    """
    method_names = _parse_list(methods, METHODS, "--methods", "method")
    budget_list = _parse_budgets(budgets)
    root = require_data_root(data_root)
    bundle = load_bundle(bundle_path)
    model = load_model(model_spec_for(model_spec, bundle))
    check_bundle_model(bundle, model)
    settings = {"model": model.fingerprint().describe(), "model_file": model.path.name,
                "bundle_layer": bundle.layer, "bundle_alpha": bundle.alpha,
                "split": split, "max_tokens": max_tokens, "judge": "lexicon"}
    _check_settings(out, settings, record=False)

    lang_list = parse_languages(langs)
    prompts, examples = [], {}
    for lang in lang_list:
        try:
            prompts += load_language(root, lang, split, limit)
            if max(budget_list) > 0 and lang not in bundle.source_languages:
                examples[lang] = load_language(root, lang, "val", max(budget_list))
        except FileNotFoundError as error:
            if langs in ("all", "high", "mid", "low"):
                click.echo(f"skipping {lang}: {error}", err=True)
                continue
            raise click.ClickException(str(error)) from error
    evaluated = sorted({p.lang for p in prompts})
    target = collect_target_examples(model, bundle.layer, examples, threads)
    train = ActivationStore(train_acts) if train_acts else None
    val = ActivationStore(val_acts) if val_acts else None

    setups = []
    for name in method_names:
        budgets_of = budget_list if name in ADAPTED else [0]
        if name.endswith("-adapted"):
            # At budget 0 an adapted baseline is its zero-shot form.
            budgets_of = [b for b in budget_list if b > 0]
            if not budgets_of:
                raise click.BadParameter(f"{name} needs a budget above 0",
                                         param_hint="--budgets")
        for budget in budgets_of:
            try:
                setups.append(build_method(name, budget, bundle, evaluated, target, train, val))
            except ValueError as error:
                raise click.ClickException(str(error)) from error

    from lrgate_cpp.judge_lexicon import is_refusal_batch

    job = EvalJob(prompts, max_tokens, batch, threads)
    _check_settings(out, settings, record=True)
    started = time.perf_counter()
    already = count_finished(load_completions(out / "completions.jsonl"),
                             [setup.label for setup in setups], prompts)
    with progress_bar(len(prompts) * len(setups), "eval", initial=already) as bar:
        records = run_eval(model, setups, job, out, is_refusal_batch, on_progress=bar.update)
    paths = write_report(records, out, "multilingual lexicon judge (lrgate_cpp.judge_lexicon)")
    click.echo(f"{len(records)} completions in {out} ({time.perf_counter() - started:.0f} s "
               f"this run); wrote " + ", ".join(p.name for p in paths))
