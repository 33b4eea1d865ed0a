"""``lrgate fit``: fit a gate bundle from stored activations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.extract import ActivationStore
from lrgate_cpp.fitting import fit_gate, pick_layer
from lrgate_cpp.languages import HIGH_RESOURCE


def _open_store(path: Path, option: str) -> ActivationStore:
    try:
        return ActivationStore(path)
    except (FileNotFoundError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint=option) from error


@click.command()
@click.option("--train", "train_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Activations of the train prompts, from `lrgate extract`.")
@click.option("--val", "val_dir", metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Activations of validation prompts; needed by --layer auto.")
@click.option("--layer", default="auto", show_default=True, metavar="auto|N",
              help="Block whose output the gate reads; auto picks the best validation AUC.")
@click.option("--layer-range", default=None, metavar="FIRST:LAST",
              help="Blocks --layer auto chooses from [default: the middle half of the model].")
@click.option("--sources", default=",".join(HIGH_RESOURCE), show_default=True, metavar="CODES",
              help="Source languages the directions and readout are fitted on.")
@click.option("--rank", type=click.IntRange(1, 64), metavar="N", default=10, show_default=True,
              help="Rank of the readout basis (capped at the number of sources).")
@click.option("--lam", type=click.FloatRange(0.0), metavar="X", default=1.0, show_default=True,
              help="Steering strength multiplier lambda; alpha = lambda * projection gap.")
@click.option("--C", "c_value", type=click.FloatRange(min=0.0, min_open=True), metavar="X",
              default=1.0, show_default=True, help="Inverse L2 strength of the logistic readout.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              metavar="FILE", help="Bundle file to write (.gguf).")
def fit(train_dir: Path, val_dir: Path | None, layer: str, layer_range: str | None, sources: str,
        rank: int, lam: float, c_value: float, out: Path) -> None:
    """Fit the gate on high-resource activations and write a bundle.

    Computes one harmfulness direction per source language, the pooled
    direction v_HRL, a rank-k basis of the directions, a standardized
    class-balanced logistic readout on the projections, its threshold
    (budget 0) and the steering strength alpha.
    """
    from lrgate_cpp.cli.common import parse_languages

    source_languages = parse_languages(sources, "--sources")
    train = _open_store(train_dir, "--train")
    chosen, aucs = _choose_layer(layer, train, val_dir, layer_range, source_languages, rank,
                                 c_value)

    features, labels, langs = train.features(chosen, "t_post_inst")
    missing = [code for code in source_languages if code not in set(langs)]
    if missing:
        raise click.BadParameter(f"no train activations for {', '.join(missing)}; extract "
                                 "them or drop them from --sources", param_hint="--sources")
    try:
        gate = fit_gate(features, labels, langs, source_languages=source_languages, rank=rank,
                        C=c_value, lam=lam)
        bundle = GateBundle.from_fit(gate, train.fingerprint, chosen)
        bundle.save(out)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {out}: layer {chosen}, rank {bundle.rank}, alpha {bundle.alpha:.4g}, "
               f"threshold {bundle.default.threshold:.4g}, train balanced accuracy "
               f"{bundle.default.fit_score:.3f}")
    if aucs:
        click.echo("validation AUC by layer: " + json.dumps({k: round(v, 4) for k, v in aucs.items()}))


def _parse_range(text: str | None, n_layer: int) -> range:
    # Early blocks separate the prompt sets by surface features (validation
    # AUC near 1 at block 0 on SmolLM2), and steering there disrupts the
    # reply, so by default auto only looks at the middle half of the model.
    if text is None:
        return range(n_layer // 4, (3 * n_layer) // 4 + 1)
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not FIRST:LAST, e.g. 8:16",
                                 param_hint="--layer-range") from error
    return range(first, last + 1)


def _choose_layer(layer: str, train: ActivationStore, val_dir: Path | None,
                  layer_range: str | None, sources: list[str], rank: int,
                  c_value: float) -> tuple[int, dict[int, float]]:
    if layer != "auto":
        try:
            chosen = int(layer)
        except ValueError as error:
            raise click.BadParameter(f"{layer!r} is not 'auto' or a block index",
                                     param_hint="--layer") from error
        if chosen not in train.layers:
            raise click.BadParameter(f"layer {chosen} was not extracted; stored layers: "
                                     f"{train.layers}", param_hint="--layer")
        return chosen, {}
    if val_dir is None:
        raise click.UsageError("--layer auto needs --val activations; or pass --layer N")
    val = _open_store(val_dir, "--val")
    allowed = _parse_range(layer_range, train.fingerprint.n_layer)
    layers = [lay for lay in train.layers if lay in val.layers and lay in allowed]
    if not layers:
        raise click.UsageError(f"--train and --val share no layer in {allowed.start}.."
                               f"{allowed.stop - 1}; set --layer-range or --layer")
    train_by_layer, val_by_layer = {}, {}
    train_labels = val_labels = None
    train_langs: list[str] = []
    for lay in layers:
        train_by_layer[lay], train_labels, train_langs = train.features(lay, "t_post_inst")
        val_by_layer[lay], val_labels, _ = val.features(lay, "t_post_inst")
    try:
        return pick_layer(train_by_layer, train_labels, train_langs, val_by_layer, val_labels,
                          source_languages=sources, rank=rank, C=c_value)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
