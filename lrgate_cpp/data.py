"""Prompt sets: PolyRefuse, MultiJail, MGSM and a plain JSONL format.

Every loader returns a list of :class:`Prompt` in file order. ``limit``
keeps the first ``limit`` prompts of a file, so repeated runs see the same
prompts. Loaders raise ``FileNotFoundError`` for a missing file and
``ValueError`` for a file they cannot use; both messages name the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrgate_cpp.languages import check_language

__all__ = [
    "LABELS",
    "SPLITS",
    "Prompt",
    "encode_labels",
    "load_jsonl",
    "load_mgsm",
    "load_multijail",
    "load_polyrefuse",
    "load_split",
    "save_jsonl",
]

LABELS: tuple[str, ...] = ("harmful", "harmless")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# The English train and val sets live apart from the translations, under
# these names. English test prompts come from the translated test files,
# whose harmless set is parallel to the other languages' harmless test sets.
_ENGLISH_FILES = {
    ("harmful", "train"): "harmful_train.json",
    ("harmful", "val"): "harmful_val.json",
    ("harmless", "train"): "harmless_train_200_sampled.json",
    ("harmless", "val"): "harmless_val_200_sampled.json",
}


@dataclass(frozen=True)
class Prompt:
    """One prompt with its label.

    Attributes:
        text: the prompt as a user would type it, not chat-templated.
        label: ``"harmful"`` or ``"harmless"``.
        lang: language code from :mod:`lrgate_cpp.languages`.
        source: data set name, for example ``"polyrefuse"`` or a JSONL file name.
        split: ``"train"``, ``"val"``, ``"test"``, another name a JSONL file
            gives, or None for a source without splits.
    """

    text: str
    label: str
    lang: str
    source: str
    split: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"invalid label {self.label!r}; expected one of {LABELS}")
        object.__setattr__(self, "lang", check_language(self.lang))
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"prompt text must be a non-empty string; got {self.text!r}")


def encode_labels(prompts: Iterable[Prompt]) -> np.ndarray:
    """Return int8 labels of shape (n_prompts,): 1 for harmful, 0 for harmless."""
    return np.array([p.label == "harmful" for p in prompts], dtype=np.int8)


def load_polyrefuse(
    root: str | Path, lang: str, label: str, split: str, limit: int | None = None
) -> list[Prompt]:
    """Load one PolyRefuse file: prompts of one language, label and split.

    ``root`` is the folder holding ``PolyRefuse/`` and ``dataset/splits/``,
    or a folder that contains it as ``polyrefuse/``. Translated test files
    store the English original in ``instruction`` and the translation in
    ``instruction_translated``; train and val files store the translation in
    ``instruction``. English train and val prompts are read from
    ``dataset/splits/``.
    """
    lang = check_language(lang)
    _check_limit(limit)
    if label not in LABELS:
        raise ValueError(f"invalid label {label!r}; expected one of {LABELS}")
    if split not in SPLITS:
        raise ValueError(f"invalid split {split!r}; expected one of {SPLITS}")
    base = _resolve_polyrefuse_root(Path(root))

    if lang == "en" and split != "test":
        path = base / "dataset" / "splits" / _ENGLISH_FILES[(label, split)]
    else:
        path = base / "PolyRefuse" / f"{label}_{split}_translated_{lang}.json"
    if not path.is_file():
        available = sorted(
            p.name.rsplit("_", 1)[1].removesuffix(".json")
            for p in (base / "PolyRefuse").glob(f"{label}_{split}_translated_*.json")
        )
        raise FileNotFoundError(
            f"PolyRefuse file {path} not found; {label} {split} prompts exist for: "
            f"{' '.join(available) or 'none'}. Use another split, or give prompts for "
            f"{lang!r} as a JSONL file"
        )

    field = "instruction_translated" if split == "test" and lang != "en" else "instruction"
    records = _read_json_list(path)
    prompts = []
    for index, record in enumerate(records[:limit]):
        text = record.get(field) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{path}: record {index} has no non-empty {field!r} field; "
                "the file is not a PolyRefuse file or is damaged"
            )
        prompts.append(Prompt(text, label, lang, "polyrefuse", split))
    return prompts


def load_split(
    root: str | Path, lang: str, split: str, limit: int | None = None
) -> list[Prompt]:
    """Load the harmful then the harmless PolyRefuse prompts of one language and split.

    ``limit`` applies to each label, so ``limit=8`` returns up to 16 prompts.
    """
    harmful = load_polyrefuse(root, lang, "harmful", split, limit)
    harmless = load_polyrefuse(root, lang, "harmless", split, limit)
    return harmful + harmless


def load_multijail(path: str | Path, lang: str, limit: int | None = None) -> list[Prompt]:
    """Load the harmful prompts of one language column of a MultiJail CSV file.

    The file has a header line (``id, source, tags`` and one column per
    language), may start with a UTF-8 byte-order mark, and has fields with
    line breaks. All MultiJail prompts are harmful.
    """
    lang = check_language(lang)
    _check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MultiJail file {path} not found; pass the path of MultiJail.csv")
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        if lang not in columns:
            raise ValueError(
                f"{path}: no column {lang!r}; language columns: "
                f"{' '.join(c for c in columns if c not in ('id', 'source', 'tags'))}"
            )
        prompts = []
        for row in reader:
            if limit is not None and len(prompts) >= limit:
                break
            text = row.get(lang)
            if not text or not text.strip():
                raise ValueError(
                    f"{path}: line {reader.line_num} (id {row.get('id')!r}) has an empty "
                    f"{lang!r} field; remove the row or fill in the prompt"
                )
            prompts.append(Prompt(text, "harmful", lang, "multijail"))
    if not prompts:
        raise ValueError(f"{path}: contains no prompts; expected a header line and data rows")
    return prompts


def load_mgsm(root: str | Path, lang: str, limit: int | None = None) -> list[Prompt]:
    """Load MGSM questions of one language from ``root/mgsm_<lang>.tsv`` as harmless prompts.

    Each line is ``question<TAB>answer`` with no header. The answers are not used.
    """
    lang = check_language(lang)
    _check_limit(limit)
    path = Path(root) / f"mgsm_{lang}.tsv"
    if not path.is_file():
        available = sorted(p.stem.removeprefix("mgsm_") for p in Path(root).glob("mgsm_*.tsv"))
        raise FileNotFoundError(
            f"MGSM file {path} not found; files exist for: {' '.join(available) or 'none'}"
        )
    prompts = []
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if limit is not None and len(prompts) >= limit:
                break
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip():
                raise ValueError(
                    f"{path}: line {line_number} has {len(fields)} tab-separated fields; "
                    "expected 'question<TAB>answer' with a non-empty question"
                )
            prompts.append(Prompt(fields[0], "harmless", lang, "mgsm"))
    if not prompts:
        raise ValueError(f"{path}: contains no questions")
    return prompts


def load_jsonl(path: str | Path, limit: int | None = None) -> list[Prompt]:
    """Load prompts from a JSONL file, one object per line.

    Each object needs ``text``, ``label`` (``"harmful"`` or ``"harmless"``)
    and ``lang``, and may give ``split`` and ``source`` (default: the file
    name). Blank lines are skipped.
    """
    _check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file {path} not found")
    prompts = []
    with path.open(encoding="utf-8") as file:
        try:
            for line_number, line in enumerate(file, start=1):
                if limit is not None and len(prompts) >= limit:
                    break
                if not line.strip():
                    continue
                prompts.append(_parse_jsonl_record(path, line_number, line))
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte "
                             f"{error.start} of a line); save it as UTF-8") from None
    if not prompts:
        raise ValueError(
            f"{path}: contains no prompts; expected lines like "
            '{"text": "...", "label": "harmful", "lang": "sw"}'
        )
    return prompts


def save_jsonl(prompts: Iterable[Prompt], path: str | Path) -> None:
    """Write prompts to a JSONL file that :func:`load_jsonl` reads back unchanged."""
    with Path(path).open("w", encoding="utf-8") as file:
        for prompt in prompts:
            record = {"text": prompt.text, "label": prompt.label, "lang": prompt.lang,
                      "source": prompt.source, "split": prompt.split}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _parse_jsonl_record(path: Path, line_number: int, line: str) -> Prompt:
    where = f"{path}: line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where} is not valid JSON ({error.msg}); fix or remove the line"
        ) from error
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a JSON {type(record).__name__}; expected an object")
    for key in ("text", "label", "lang"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{where} has no string field {key!r}; add it")
    split = record.get("split")
    source = record.get("source", path.name)
    if split is not None and not isinstance(split, str):
        raise ValueError(f"{where}: field 'split' must be a string or null; got {split!r}")
    if not isinstance(source, str):
        raise ValueError(f"{where}: field 'source' must be a string; got {source!r}")
    try:
        return Prompt(record["text"], record["label"], record["lang"], source, split)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None; got {limit!r}")


def _resolve_polyrefuse_root(root: Path) -> Path:
    for candidate in (root, root / "polyrefuse"):
        if (candidate / "PolyRefuse").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no PolyRefuse data under {root}; expected {root}/PolyRefuse/ or "
        f"{root}/polyrefuse/PolyRefuse/ (a copy of the mainlp/Multilingual-Refusal data)"
    )


def _read_json_list(path: Path) -> list:
    try:
        with path.open(encoding="utf-8") as file:
            records = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from error
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{path}: contains no records")
    return records
