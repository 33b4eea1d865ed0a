"""``lrgate calibrate``: reset one language's threshold from a few examples."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import numpy as np

from lrgate_cpp.cli.common import (
    check_bundle_model,
    data_root_option,
    load_bundle,
    load_model,
    bundle_model_option,
    model_spec_for,
    threads_option,
)
from lrgate_cpp.data import load_jsonl
from lrgate_cpp.reader import last_prompt_rows
from lrgate_cpp.fitting import MAX_BUDGET, calibrate_language
from lrgate_cpp.languages import check_language
from lrgate_cpp.sources import load_language

# Examples per class taken from --examples or --data-root when --budget is not given.
DEFAULT_BUDGET = 4


@click.command()
@click.option("--bundle", "bundle_path", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path), help="Gate bundle to calibrate.")
@click.option("--lang", required=True, metavar="CODE", help="Language to calibrate (ISO 639-1).")
@bundle_model_option
@click.option("--harmful", "harmful_texts", multiple=True, metavar="TEXT",
              help="A harmful example in the language; repeat for more.")
@click.option("--harmless", "harmless_texts", multiple=True, metavar="TEXT",
              help="A harmless example in the language; repeat for more.")
@click.option("--examples", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              metavar="FILE", help="JSONL examples ({text, label, lang}).")
@data_root_option
@click.option("--budget", type=click.IntRange(1, MAX_BUDGET), default=None, metavar="B",
              help="Examples per class taken from --examples or --data-root [default: 4].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write a new bundle here instead of updating --bundle in place.")
@threads_option
def calibrate(bundle_path: Path, lang: str, model_spec: str, harmful_texts: tuple[str, ...],
              harmless_texts: tuple[str, ...], examples: Path | None, data_root: Path | None,
              budget: int | None, out: Path | None, threads: int | None) -> None:
    """Recalibrate a bundle's readout and threshold for one language.

    Give 1 to 64 examples per class: typed with --harmful/--harmless, from a
    JSONL file, or the first B validation prompts of the language under
    --data-root. The model runs on them, the readout is refitted on the
    bundle's stored source-language features plus these examples, and the
    language's threshold is chosen on the examples. Without --out the bundle
    is updated in place after a copy is saved as FILE.bak.
    """
    try:
        lang = check_language(lang)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--lang") from error
    bundle = load_bundle(bundle_path)
    harmful, harmless = _gather_examples(lang, harmful_texts, harmless_texts, examples,
                                         data_root, budget)
    model = load_model(model_spec_for(model_spec, bundle))
    check_bundle_model(bundle, model)

    rows = last_prompt_rows(model, harmful + harmless, bundle.layer, n_threads=threads)
    labels = np.array([1] * len(harmful) + [0] * len(harmless), dtype=np.int8)
    try:
        calibration = calibrate_language(lang, rows, labels, basis_t=bundle.basis_t,
                                         train_z=bundle.train_z,
                                         train_labels=bundle.train_labels, C=bundle.C)
        bundle.add_calibration(calibration)
        target = out or bundle_path
        if out is None:
            shutil.copy2(bundle_path, bundle_path.with_name(bundle_path.name + ".bak"))
        bundle.save(target)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    backup = f" (previous version kept as {bundle_path.name}.bak)" if out is None else ""
    click.echo(f"{lang}: threshold {calibration.threshold:.4g}, budget {calibration.budget}, "
               f"fit score {calibration.fit_score:.3f}; wrote {target}{backup}")


def _gather_examples(lang: str, harmful: tuple[str, ...], harmless: tuple[str, ...],
                     examples: Path | None, data_root: Path | None,
                     budget: int | None) -> tuple[list[str], list[str]]:
    """Return (harmful texts, harmless texts), equal in number, from one source."""
    typed = bool(harmful or harmless)
    if typed and examples is not None:
        raise click.UsageError("give examples one way: --harmful/--harmless or --examples FILE")
    if typed and budget is not None:
        raise click.UsageError("--budget applies to --examples and --data-root; typed examples "
                               "are all used")
    # --data-root (or $LRGATE_DATA) is the fallback when no example is given.
    if not typed and examples is None and data_root is None:
        raise click.UsageError("no examples: pass --harmful/--harmless, --examples FILE, or "
                               "--data-root DIR")
    if not typed:
        b = budget or DEFAULT_BUDGET
        source = str(examples) if examples is not None else f"the {lang} validation prompts"
        try:
            prompts = (load_jsonl(examples) if examples is not None
                       else load_language(data_root, lang, "val", b))
        except (FileNotFoundError, ValueError) as error:
            raise click.ClickException(str(error)) from error
        other = sorted({p.lang for p in prompts} - {lang})
        prompts = [p for p in prompts if p.lang == lang]
        if not prompts:
            raise click.UsageError(f"{source} has no examples in {lang!r}"
                                   + (f" (it has {', '.join(other)})" if other else ""))
        harmful = tuple(p.text for p in prompts if p.label == "harmful")[:b]
        harmless = tuple(p.text for p in prompts if p.label == "harmless")[:b]
        if not harmful or not harmless:
            raise click.UsageError(
                f"{source} has {len(harmful)} harmful and {len(harmless)} harmless examples in "
                f"{lang!r}; calibration needs at least one of each")
        if min(len(harmful), len(harmless)) < b:
            kept = min(len(harmful), len(harmless))
            requested = f"--budget {b}" if budget is not None else f"the default budget of {b}"
            click.echo(f"warning: {source} has only {kept} examples per class in {lang!r}; "
                       f"using {kept}, fewer than {requested}", err=True)
            harmful, harmless = harmful[:kept], harmless[:kept]
    if not harmful or not harmless or len(harmful) != len(harmless):
        raise click.UsageError(
            f"calibration needs the same number (1 to {MAX_BUDGET}) of harmful and harmless "
            f"examples in {lang!r}; got {len(harmful)} harmful and {len(harmless)} harmless")
    empty = [t for t in harmful + harmless if not t.strip()]
    if empty:
        raise click.UsageError("an example given with --harmful or --harmless is empty; "
                               "every example needs text")
    return list(harmful), list(harmless)
