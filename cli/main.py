"""The ``lrgate`` command group."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable

import click

from lrgate_cpp.cli.analyze_cmd import analyze
from lrgate_cpp.cli.calibrate_cmd import calibrate
from lrgate_cpp.cli.chat_cmd import chat
from lrgate_cpp.cli.eval_cmd import evaluate
from lrgate_cpp.cli.extract_cmd import extract
from lrgate_cpp.cli.fit_cmd import fit
from lrgate_cpp.cli.inspect_cmd import inspect_bundle
from lrgate_cpp.cli.sweep_cmd import sweep
from lrgate_cpp.cli.utility_cmd import utility

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True,
              help="Log more: -v for lrgate's progress, -vv to add llama.cpp's own log.")
@click.version_option(package_name="lrgate")
def cli(verbose: int) -> None:
    """lrgate: a low-rank refusal gate for llama.cpp models.

    The gate reads the residual stream at one layer while the model runs,
    decides per prompt and language whether it is harmful, and steers the
    reply toward refusal or away from the harmfulness direction.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # llama.cpp's loader writes hundreds of lines, and lrgate turns its
    # failures into its own messages: show its warnings with -v, all with -vv.
    llama_level = {0: logging.CRITICAL, 1: logging.WARNING}.get(verbose, logging.DEBUG)
    logging.getLogger("lrgate_cpp.llama_cpp").setLevel(llama_level)
    # The gguf writer logs each file it writes at INFO.
    logging.getLogger("gguf").setLevel(logging.INFO if verbose > 1 else logging.WARNING)
    warnings.showwarning = _make_warning_printer()


def _make_warning_printer() -> Callable[..., None]:
    """Return a warnings.showwarning that prints each text once, as a 'warning:' line."""
    shown: set[str] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        text = str(message)
        if text not in shown:
            shown.add(text)
            click.echo(f"warning: {text}", err=True)

    return show


for command in (extract, fit, calibrate, inspect_bundle, analyze, chat, evaluate,
                sweep, utility):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="lrgate")
