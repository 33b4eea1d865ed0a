"""``lrgate analyze``: the representation report for one bundle and extraction."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from lrgate_cpp.analysis import analyze_representation, plot_projections, summarize_tiers, write_tables
from lrgate_cpp.bundle import BundleError, GateBundle
from lrgate_cpp.extract import ActivationStore


@click.command()
@click.option("--bundle", "bundle_path", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path), help="Gate bundle.")
@click.option("--acts", "acts_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Activations of test prompts from `lrgate extract`, with the bundle's layer.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="DIR", help="Folder for the tables and the plot.")
@click.option("--name", default="representation", show_default=True,
              help="File name stem of the outputs.")
def analyze(bundle_path: Path, acts_dir: Path, out: Path, name: str) -> None:
    """Report, per language and tier, how well harm is still represented.

    Writes AUC and balanced accuracy of the v_HRL projection and of the gate
    logit as CSV and JSON, and a PNG of the projections by tier.
    """
    try:
        bundle = GateBundle.load(bundle_path)
        store = ActivationStore(acts_dir)
    except (BundleError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    if not bundle.model.matches(store.fingerprint):
        raise click.ClickException(
            f"the bundle was fitted on {bundle.model.describe()} but the activations come from "
            f"{store.fingerprint.describe()}")
    try:
        rows, projections = analyze_representation(bundle, store)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    tiers = summarize_tiers(rows)
    paths = write_tables(rows, tiers, out, name)

    _, labels, langs = store.features(bundle.layer, bundle.position)
    langs_array = np.asarray(langs)
    labels_by_lang = {lang: labels[langs_array == lang] for lang in projections}
    paths.append(plot_projections(projections, labels_by_lang, out / f"{name}.png",
                                  f"{bundle.model.name}, l_out-{bundle.layer}"))

    click.echo(f"{'lang':<5}{'tier':<6}{'proj AUC':>9}{'proj bacc':>10}{'gate AUC':>9}"
               f"{'gate bacc':>10}{'b':>3}")
    for row in rows:
        click.echo(f"{row['lang']:<5}{row['tier']:<6}{row['projection_auc']:>9.3f}"
                   f"{row['projection_balanced_accuracy']:>10.3f}{row['gate_auc']:>9.3f}"
                   f"{row['gate_balanced_accuracy']:>10.3f}{row['budget']:>3}")
    for tier in tiers:
        click.echo(f"tier {tier['tier']:<5} projection AUC {tier['projection_auc']:.3f}, "
                   f"gate AUC {tier['gate_auc']:.3f}, gate balanced accuracy "
                   f"{tier['gate_balanced_accuracy']:.3f}")
    click.echo("wrote " + ", ".join(str(p) for p in paths))
