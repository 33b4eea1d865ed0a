"""Lookup of the data files that contain a language's prompts, under one data folder.

PolyRefuse has train, val and test splits for en ar de es fr it ja ko nl
pl ru th yo zh. Languages it lacks but MultiJail (harmful) and MGSM
(harmless) have, Swahili among them, get pseudo-splits from those two
files: the first :data:`HELD_FOR_CALIBRATION` rows of each are "val", for
calibration, and the rest are "test". They have no "train" split.
"""

from __future__ import annotations

from pathlib import Path

from lrgate_cpp.data import Prompt, load_mgsm, load_multijail, load_split
from lrgate_cpp.languages import LANGUAGE_NAMES, check_language

__all__ = ["HELD_FOR_CALIBRATION", "load_language", "polyrefuse_languages"]

HELD_FOR_CALIBRATION = 8


def polyrefuse_languages(root: Path) -> set[str]:
    """Return the languages with translated PolyRefuse files under ``root``, plus English."""
    folder = root / "polyrefuse" / "PolyRefuse"
    langs = {p.stem.rsplit("_", 1)[1] for p in folder.glob("harmful_*_translated_*.json")}
    return langs | {"en"} if langs else set()


def _multijail_mgsm_languages(root: Path) -> set[str]:
    mgsm = {p.stem.removeprefix("mgsm_") for p in (root / "mgsm").glob("mgsm_*.tsv")}
    header = ""
    csv_path = root / "multijail" / "calibration.csv"
    if csv_path.exists():
        with csv_path.open(encoding="utf-8-sig") as file:
            header = file.readline()
    return mgsm & {column.strip() for column in header.split(",")}


def load_language(root: Path, lang: str, split: str, limit: int | None = None) -> list[Prompt]:
    """Load harmful then harmless prompts of one language and split from a data folder.

    ``limit`` applies to each label.

    Raises:
        FileNotFoundError: no data file holds this language and split.
        ValueError: ``lang`` is not a supported language code.
    """
    lang = check_language(lang)
    if lang in polyrefuse_languages(root):
        return load_split(root / "polyrefuse", lang, split, limit)
    if lang in _multijail_mgsm_languages(root):
        if split == "train":
            raise FileNotFoundError(
                f"{lang!r} has no train split: MultiJail and MGSM give it only 'val' (the first "
                f"{HELD_FOR_CALIBRATION} rows) and 'test' (the rest)")
        harmful = load_multijail(root / "multijail" / "calibration.csv", lang)
        harmless = load_mgsm(root / "mgsm", lang)
        if split == "val":
            harmful, harmless = harmful[:HELD_FOR_CALIBRATION], harmless[:HELD_FOR_CALIBRATION]
        else:
            harmful, harmless = harmful[HELD_FOR_CALIBRATION:], harmless[HELD_FOR_CALIBRATION:]
        harmful = [Prompt(p.text, p.label, p.lang, p.source, split) for p in harmful[:limit]]
        harmless = [Prompt(p.text, p.label, p.lang, p.source, split) for p in harmless[:limit]]
        return harmful + harmless
    found = polyrefuse_languages(root) | _multijail_mgsm_languages(root)
    available = sorted(code for code in found if code in LANGUAGE_NAMES)
    raise FileNotFoundError(
        f"no prompts for language {lang!r} under {root}; languages with data: "
        f"{' '.join(available) or 'none (is this the data folder?)'}")
