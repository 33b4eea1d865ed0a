"""Multiple-choice questions for the utility check: MMLU subsets and SIB-200.

Both loaders return :class:`Question` objects in a fixed order, so repeated
runs with the same ``limit`` see the same questions. They raise
``FileNotFoundError`` for a missing file and ``ValueError`` for a file they
cannot use; both messages name the file.

- MMLU (``mmlu-am/``): CSV files named ``{subject}_{split}[_{lang}].csv``
  with no header and six columns: question, options A to D, answer letter.
  A file without a language suffix is English.
- SIB-200 (``sib200/<flores_code>/test.tsv``): a header ``index_id,
  category, text`` and one sentence per row, parallel across languages.
  Each sentence becomes a question whose options are the seven topics.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lrgate_cpp.languages import check_language

__all__ = [
    "MMLU_SUBJECTS",
    "SIB_CATEGORIES",
    "SIB_CODES",
    "Question",
    "load_mmlu",
    "load_sib200",
]

MMLU_SUBJECTS: tuple[str, ...] = ("clinical_knowledge", "college_medicine", "virology")

# The topics in the order they are offered as options A to G.
SIB_CATEGORIES: tuple[str, ...] = ("science/technology", "travel", "politics", "sports",
                                   "health", "entertainment", "geography")

# ISO 639-1 code -> FLORES-200 folder name.
SIB_CODES: dict[str, str] = {
    "en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "es": "spa_Latn", "it": "ita_Latn",
    "nl": "nld_Latn", "pl": "pol_Latn", "ru": "rus_Cyrl", "zh": "zho_Hans", "ja": "jpn_Jpan",
    "ar": "arb_Arab", "ko": "kor_Hang", "th": "tha_Thai", "el": "ell_Grek", "he": "heb_Hebr",
    "hi": "hin_Deva", "fa": "pes_Arab", "sw": "swh_Latn", "am": "amh_Ethi", "my": "mya_Mymr",
    "km": "khm_Khmr", "si": "sin_Sinh", "yo": "yor_Latn",
}

_LETTERS = "ABCD"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question.

    Attributes:
        dataset: ``"mmlu"`` or ``"sib200"``.
        subject: MMLU subject, or ``"topic"`` for SIB-200.
        lang: language code of the text.
        index: position of the question in its (dataset, subject, lang) set.
        text: the question (MMLU) or the sentence to classify (SIB-200).
        options: the option texts, in letter order.
        answer: index of the correct option.
    """

    dataset: str
    subject: str
    lang: str
    index: int
    text: str
    options: tuple[str, ...]
    answer: int


def load_mmlu(root: str | Path, subject: str, lang: str, split: str = "test",
              limit: int | None = None) -> list[Question]:
    """Load the first ``limit`` questions of one MMLU subject, language and split.

    Args:
        root: the ``mmlu-am`` folder, or a folder that contains it.
        subject: one of :data:`MMLU_SUBJECTS`.
        lang: ``"en"`` (the file without suffix) or a suffix such as ``"am"``.
        split: ``"dev"``, ``"val"`` or ``"test"`` (default).
        limit: questions to keep; None keeps all.
    """
    check_language(lang)
    _check_limit(limit)
    if subject not in MMLU_SUBJECTS:
        raise ValueError(f"unknown MMLU subject {subject!r}; choose from "
                         f"{', '.join(MMLU_SUBJECTS)}")
    folder = Path(root)
    if not folder.name == "mmlu-am" and (folder / "mmlu-am").is_dir():
        folder = folder / "mmlu-am"
    suffix = "" if lang == "en" else f"_{lang}"
    path = folder / f"{subject}_{split}{suffix}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"MMLU file {path} not found; expected {{subject}}_{{split}}[_{{lang}}].csv files "
            "from the mmlu-am folder (pass the data folder that holds mmlu-am/)")
    questions: list[Question] = []
    with path.open(encoding="utf-8", newline="") as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if limit is not None and len(questions) >= limit:
                break
            if len(row) != 6:
                raise ValueError(f"{path}: row {line} has {len(row)} columns; expected 6 "
                                 "(question, A, B, C, D, answer letter) with no header")
            answer = row[5].strip().upper()
            if answer not in _LETTERS:
                raise ValueError(f"{path}: row {line} has answer {row[5]!r}; expected A, B, C "
                                 "or D")
            questions.append(Question("mmlu", subject, lang, len(questions), row[0].strip(),
                                      tuple(option.strip() for option in row[1:5]),
                                      _LETTERS.index(answer)))
    if not questions:
        raise ValueError(f"{path}: contains no questions")
    return questions


def load_sib200(root: str | Path, lang: str, limit: int | None = None) -> list[Question]:
    """Load ``limit`` SIB-200 test sentences of one language as topic questions.

    The test file lists its sentences grouped by topic, so the first rows
    would all be about science. Sentences are therefore taken round-robin
    over the topics (in :data:`SIB_CATEGORIES` order), each topic's rows in
    file order. The files are parallel, so every language gets the same
    sentences.

    Args:
        root: the ``sib200`` folder, or a folder that contains it.
        lang: an ISO code from :data:`SIB_CODES`.
        limit: sentences to keep; None keeps all.
    """
    check_language(lang)
    _check_limit(limit)
    if lang not in SIB_CODES:
        raise ValueError(f"SIB-200 has no folder for {lang!r}; languages: "
                         f"{' '.join(SIB_CODES)}")
    folder = Path(root)
    if not folder.name == "sib200" and (folder / "sib200").is_dir():
        folder = folder / "sib200"
    path = folder / SIB_CODES[lang] / "test.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"SIB-200 file {path} not found; pass the data folder that "
                                f"holds sib200/{SIB_CODES[lang]}/test.tsv")
    by_topic: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != ["index_id", "category", "text"]:
            raise ValueError(f"{path}: header is {header!r}; expected index_id, category, text")
        for line, row in enumerate(reader, start=2):
            if len(row) != 3 or row[1] not in SIB_CATEGORIES:
                raise ValueError(f"{path}: line {line} is not 'index_id<TAB>category<TAB>text' "
                                 f"with a category from {', '.join(SIB_CATEGORIES)}")
            by_topic[row[1]].append(row[2].strip())
    if not by_topic:
        raise ValueError(f"{path}: contains no sentences")
    questions: list[Question] = []
    depth = max(len(rows) for rows in by_topic.values())
    for position in range(depth):
        for answer, topic in enumerate(SIB_CATEGORIES):
            if position >= len(by_topic[topic]):
                continue
            if limit is not None and len(questions) >= limit:
                return questions
            questions.append(Question("sib200", "topic", lang, len(questions),
                                      by_topic[topic][position], SIB_CATEGORIES, answer))
    return questions


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None; got {limit!r}")
