"""How often the lexicon judge and the model judge disagree on real replies.

Usage::

    python -m lrgate_cpp.judge_agreement RUN/completions.jsonl \\
        --method gate@b4 --per-cell 10 --out docs/results/judge_agreement.md

It reads completions written by ``lrgate eval`` (whose ``refused`` field is
the lexicon judge's verdict), runs the model judge on the same request and
reply pairs, and writes the disagreement per language as Markdown and JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from lrgate_cpp.evaluate import load_completions
from lrgate_cpp.judge_model import ModelJudge

__all__ = ["compare_judges", "main"]

# The model judge's threshold fitted on labelled replies in judge_validation.md.
VALIDATED_THRESHOLD = -0.394


def compare_judges(records: list[dict], judge: ModelJudge) -> list[dict]:
    """Return one row per (language, label): counts of refusals by each judge and disagreements."""
    model_verdicts = judge.judge([r["prompt"] for r in records], [r["reply"] for r in records])
    cells: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    for record, verdict in zip(records, model_verdicts):
        cells[(record["lang"], record["label"])].append((bool(record["refused"]), bool(verdict)))
    rows = []
    for (lang, label), pairs in sorted(cells.items()):
        rows.append({
            "lang": lang, "label": label, "n": len(pairs),
            "lexicon_refusals": sum(a for a, _ in pairs),
            "model_refusals": sum(b for _, b in pairs),
            "disagreements": sum(a != b for a, b in pairs),
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("completions", type=Path)
    parser.add_argument("--method", default=None, help="Only this method's replies.")
    parser.add_argument("--per-cell", type=int, default=10,
                        help="Replies per language and label (default 10).")
    parser.add_argument("--judge-model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write.")
    args = parser.parse_args(argv)

    records = [r for r in load_completions(args.completions)
               if args.method is None or r["method"] == args.method]
    kept, counts = [], defaultdict(int)
    for record in records:
        cell = (record["lang"], record["label"])
        if counts[cell] < args.per_cell:
            counts[cell] += 1
            kept.append(record)
    if not kept:
        parser.error(f"no completions of method {args.method!r} in {args.completions}")
    started = time.perf_counter()
    judge = ModelJudge.from_path(args.judge_model, threshold=VALIDATED_THRESHOLD,
                                 n_threads=args.threads)
    rows = compare_judges(kept, judge)
    seconds = time.perf_counter() - started

    lines = [
        "# Lexicon judge against model judge on lrgate's replies", "",
        f"Replies: `{args.completions}`, method `{args.method}`, up to {args.per_cell} per "
        f"language and label. Model judge: {args.judge_model} with threshold "
        f"{VALIDATED_THRESHOLD} (fitted in judge_validation.md). Wall time {seconds:.0f} s.", "",
        "| lang | label | n | lexicon refusals | model refusals | disagreements |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['lang']} | {row['label']} | {row['n']} | {row['lexicon_refusals']} "
                     f"| {row['model_refusals']} | {row['disagreements']} |")
    total = sum(r["n"] for r in rows)
    disagree = sum(r["disagreements"] for r in rows)
    lines += ["", f"Disagreement over all {total} replies: {disagree} ({100 * disagree / total:.0f}%).",
              ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
