"""Gate bundles shipped inside the package, and the search for one that fits a model.

A wheel installs the repository's ``bundles/`` folder as ``lrgate_cpp/bundles``,
a folder without ``__init__.py``. An editable install maps the same name onto
the repository's ``bundles/`` folder. Both are reached through
``importlib.resources``, with the folder beside ``lrgate_cpp/__init__.py`` as
a fallback for importers that do not serve namespace packages.
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

import lrgate_cpp
from lrgate_cpp.bundle import BundleError, GateBundle
from lrgate_cpp.fingerprint import ModelFingerprint

__all__ = ["BundleNotFoundError", "find_shipped_bundle", "shipped_bundle_files"]

log = logging.getLogger(__name__)

_BUNDLE_SUFFIX = ".gguf"


class BundleNotFoundError(FileNotFoundError):
    """No shipped gate bundle was fitted on the model in use."""


def shipped_bundle_files() -> list[Path]:
    """Return the ``.gguf`` files of the shipped bundle folder, sorted by name.

    Returns an empty list when the package ships no bundle folder.
    """
    folders: list[Path] = []
    try:
        resource = importlib.resources.files("lrgate_cpp.bundles")
    except (ModuleNotFoundError, TypeError):
        resource = None
    if resource is not None:
        # A MultiplexedPath (namespace package) may span several folders;
        # listing it yields entries from all of them.
        try:
            folders.extend({Path(str(entry)).parent for entry in resource.iterdir()})
        except (FileNotFoundError, NotADirectoryError):
            pass
    folders.append(Path(lrgate_cpp.__file__).resolve().parent / "bundles")

    files: dict[Path, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.suffix == _BUNDLE_SUFFIX and path.is_file():
                files.setdefault(path.resolve(), path)
    return sorted(files.values(), key=lambda path: path.name)


def find_shipped_bundle(
    fingerprint: ModelFingerprint, preferred_name: str | None = None
) -> tuple[Path, GateBundle]:
    """Return the path and contents of a shipped bundle fitted on ``fingerprint``'s model.

    Args:
        fingerprint: identity of the loaded model.
        preferred_name: file stem tried first, for example the short model
            name ``"qwen2.5-coder-1.5b"``; default None tries files by name.

    Raises:
        BundleNotFoundError: no shipped bundle matches. The message names the
            model and the commands that make a bundle for it.
    """
    files = shipped_bundle_files()
    files.sort(key=lambda path: path.stem != preferred_name)
    for path in files:
        try:
            bundle = GateBundle.load(path)
        except BundleError as error:
            log.warning("skipping shipped bundle %s: %s", path, error)
            continue
        if bundle.model.matches(fingerprint):
            log.info("using shipped bundle %s", path)
            return path, bundle
        log.debug("shipped bundle %s is for %s", path, bundle.model.describe())

    searched = ", ".join(path.name for path in files) or "none"
    raise BundleNotFoundError(
        f"no shipped gate bundle fits the model {fingerprint.describe()} (bundles searched: "
        f"{searched}). Make one and pass it with --bundle: run `lrgate extract` on train and "
        "val prompts, `lrgate fit --train DIR --val DIR --out FILE.gguf`, then "
        "`lrgate calibrate --bundle FILE.gguf --lang XX` for each target language"
    )
