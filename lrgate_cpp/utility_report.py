"""Summaries of a utility run: accuracy per dataset and language, with and without the gate."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lrgate_cpp.languages import ALL_LANGUAGES, TIERS, tier_of
from lrgate_cpp.metrics import bootstrap_interval

__all__ = ["summarize_utility", "write_utility_report"]


def _row(condition: str, dataset: str, group: str, records: list[dict]) -> dict:
    correct = np.array([r["correct"] for r in records], dtype=np.float64)
    harmful = [r["route"] == "harmful" for r in records]
    return {
        "condition": condition, "dataset": dataset, "group": group, "n": len(records),
        "accuracy": 100.0 * float(correct.mean()),
        "accuracy_ci": list(bootstrap_interval(correct)),
        "routed_harmful": 100.0 * float(np.mean(harmful)),
    }


def summarize_utility(records: list[dict]) -> list[dict]:
    """Group answer records by condition, dataset and language (and tier, and all).

    Returns:
        rows with the condition, dataset, group (a language code, a tier
        name or ``"all"``), question count, accuracy in percent with its 95%
        bootstrap interval, and the percent of questions routed harmful.
    """
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        cells[(record["condition"], record["dataset"])].append(record)
    rows = []
    for (condition, dataset), items in cells.items():
        present = {r["lang"] for r in items}
        for lang in [code for code in ALL_LANGUAGES if code in present]:
            rows.append(_row(condition, dataset, lang, [r for r in items if r["lang"] == lang]))
        tiers = [t for t in TIERS if any(tier_of(lang) == t for lang in present)]
        if len(tiers) > 1:
            for tier in tiers:
                rows.append(_row(condition, dataset, tier,
                                 [r for r in items if tier_of(r["lang"]) == tier]))
        rows.append(_row(condition, dataset, "all", items))
    return rows


def _markdown(rows: list[dict], header: list[str]) -> str:
    lines = [*header, "",
             "Accuracy in percent with 95% bootstrap intervals; 'change' is gated minus "
             "ungated accuracy in points; 'routed harmful' is the percent of questions the "
             "gate sent down the harmful route.", ""]
    by_key = {(r["condition"], r["dataset"], r["group"]): r for r in rows}
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    base = "none" if "none" in conditions else conditions[0]
    others = [c for c in conditions if c != base]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        groups = list(dict.fromkeys(r["group"] for r in rows if r["dataset"] == dataset))
        columns = ["group", "n", f"accuracy ({base})"]
        for other in others:
            columns += [f"accuracy ({other})", "change", "routed harmful"]
        lines += [f"## {dataset}", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        for group in groups:
            reference = by_key.get((base, dataset, group))
            if reference is None:
                continue
            cells = [group, str(reference["n"]), _format(reference)]
            for other in others:
                row = by_key.get((other, dataset, group))
                if row is None:
                    cells += ["-", "-", "-"]
                    continue
                cells += [_format(row), f"{row['accuracy'] - reference['accuracy']:+.1f}",
                          f"{row['routed_harmful']:.0f}%"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _format(row: dict) -> str:
    low, high = row["accuracy_ci"]
    return f"{row['accuracy']:.1f} [{low:.0f}, {high:.0f}]"


def write_utility_report(records: list[dict], out: Path, header: list[str] | None = None,
                         extra: dict | None = None) -> list[Path]:
    """Write ``utility.json`` and ``utility.md`` into ``out``; return their paths.

    Args:
        records: answer records from :func:`lrgate_cpp.utility.run_utility`.
        out: output folder.
        header: Markdown lines put above the tables (command, sample sizes, time).
        extra: more fields for the JSON file, such as the command and wall time.
    """
    rows = summarize_utility(records)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "utility.json", out / "utility.md"]
    paths[0].write_text(json.dumps({**(extra or {}), "rows": rows}, indent=1,
                                   ensure_ascii=False), encoding="utf-8")
    paths[1].write_text(_markdown(rows, header or ["# Multiple-choice utility"]) + "\n",
                        encoding="utf-8")
    return paths
