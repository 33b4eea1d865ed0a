"""``lrgate extract``: store residual activations of prompts."""

from __future__ import annotations

from pathlib import Path

import click

from lrgate_cpp.cli.common import (
    data_root_option,
    load_model,
    model_option,
    parse_languages,
    parse_layers,
    progress_bar,
    require_data_root,
    threads_option,
)
from lrgate_cpp.data import Prompt, load_jsonl
from lrgate_cpp.extract import POSITIONS, extract_activations
from lrgate_cpp.sources import load_language


@click.command()
@model_option
@data_root_option
@click.option("--langs", default="high", show_default=True, metavar="CODES",
              help="Comma-separated language codes, or high, mid, low, all.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train",
              show_default=True, help="Data split to read.")
@click.option("--limit", type=click.IntRange(1), default=None, metavar="N",
              help="Prompts per label and language [default: all].")
@click.option("--jsonl", "jsonl_files", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Your own prompts as JSONL ({text, label, lang}); replaces --data-root.")
@click.option("--layers", default="all", show_default=True, metavar="all|L1,L2",
              help="Blocks whose output l_out-N is stored.")
@click.option("--positions", default="t_post_inst", show_default=True, metavar="NAMES",
              help=f"Token positions, comma-separated: {', '.join(POSITIONS)}.")
@click.option("--batch", "batch_prompts", type=click.IntRange(1, 64), metavar="N", default=8,
              show_default=True, help="Prompts prefilled together.")
@threads_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="DIR", help="Output directory; an unfinished run there resumes.")
@click.option("--overwrite", is_flag=True, help="Discard an existing extraction in --out.")
def extract(model_spec: str, data_root: Path | None, langs: str, split: str, limit: int | None,
            jsonl_files: tuple[Path, ...], layers: str, positions: str, batch_prompts: int,
            threads: int | None, out: Path, overwrite: bool) -> None:
    """Run prompts through a model and store their residual activations.

    The output directory holds memory-mappable .npy arrays and a manifest;
    `lrgate fit` and `lrgate analyze` read it. An interrupted run continues
    where it stopped when started again with the same arguments.
    """
    position_list = [p.strip() for p in positions.split(",") if p.strip()]
    for position in position_list:
        if position not in POSITIONS:
            raise click.BadParameter(f"unknown position {position!r}; choose from "
                                     f"{', '.join(POSITIONS)}", param_hint="--positions")
    prompts = _collect_prompts(data_root, parse_languages(langs), split, limit, jsonl_files)
    model = load_model(model_spec)
    layer_list = parse_layers(layers, model)
    with progress_bar(len(prompts), f"extract {model.name}") as bar:
        try:
            store = extract_activations(model, prompts, out, layer_list, position_list,
                                        batch_prompts, threads, overwrite,
                                        on_progress=bar.update)
        except ValueError as error:
            raise click.ClickException(str(error)) from error
    click.echo(f"stored {len(store.prompts)} prompts x {len(store.layers)} layers in {out}")


def _collect_prompts(root: Path | None, langs: list[str], split: str, limit: int | None,
                     jsonl_files: tuple[Path, ...]) -> list[Prompt]:
    prompts: list[Prompt] = []
    try:
        if jsonl_files:
            for path in jsonl_files:
                prompts.extend(load_jsonl(path, limit))
            return prompts
        root = require_data_root(root)
        for lang in langs:
            prompts.extend(load_language(root, lang, split, limit))
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    return prompts
