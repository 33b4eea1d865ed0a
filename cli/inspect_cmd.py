"""``lrgate inspect``: show what a gate bundle holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lrgate_cpp.bundle import BundleError, GateBundle
from lrgate_cpp.languages import language_name, tier_of


def describe_bundle(bundle: GateBundle) -> dict:
    """Return the bundle's settings and calibrations as plain JSON-ready values."""
    languages = {
        lang: {"tier": tier_of(lang), "threshold": gate.threshold, "budget": gate.budget,
               "fit_score": gate.fit_score}
        for lang, gate in sorted(bundle.calibrations.items())
    }
    return {
        "model": bundle.model.describe(),
        "layer": bundle.layer,
        "node": f"l_out-{bundle.layer}",
        "position": bundle.position,
        "rank": bundle.rank,
        "lambda": bundle.lam,
        "alpha": bundle.alpha,
        "source_languages": list(bundle.source_languages),
        "default": {"threshold": bundle.default.threshold, "budget": 0,
                    "fit_score": bundle.default.fit_score},
        "calibrated": languages,
        "train_prompts": int(len(bundle.train_labels)),
    }


@click.command("inspect")
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_bundle(bundle_path: Path, as_json: bool) -> None:
    """Show a bundle's model, layer, rank, alpha and calibrated languages."""
    try:
        bundle = GateBundle.load(bundle_path)
    except (BundleError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="BUNDLE") from error
    info = describe_bundle(bundle)
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    click.echo(f"model      {info['model']}")
    click.echo(f"layer      {info['layer']} ({info['node']}, position {info['position']})")
    click.echo(f"rank       {info['rank']}")
    click.echo(f"steering   alpha {info['alpha']:.4g} (lambda {info['lambda']:g})")
    click.echo(f"sources    {' '.join(info['source_languages'])} "
               f"({info['train_prompts']} train prompts)")
    click.echo(f"budget 0   threshold {info['default']['threshold']:+.4f}, "
               f"train balanced accuracy {info['default']['fit_score']:.3f}")
    if not info["calibrated"]:
        click.echo("calibrated none (every language uses the budget-0 threshold)")
        return
    click.echo("calibrated languages:")
    click.echo(f"  {'lang':<5}{'name':<12}{'tier':<6}{'threshold':>10}{'budget':>8}{'fit':>7}")
    for lang, entry in info["calibrated"].items():
        click.echo(f"  {lang:<5}{language_name(lang):<12}{entry['tier']:<6}"
                   f"{entry['threshold']:>+10.4f}{entry['budget']:>8}{entry['fit_score']:>7.3f}")
