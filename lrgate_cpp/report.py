"""Summaries of an evaluation: tables per language and tier, and plots."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from lrgate_cpp.languages import ALL_LANGUAGES, TIERS, tier_of
from lrgate_cpp.metrics import summarize_refusals

__all__ = ["summarize", "write_report"]


def _row(method: str, group: str, records: list[dict]) -> dict:
    harmful = [r["refused"] for r in records if r["label"] == "harmful"]
    harmless = [r["refused"] for r in records if r["label"] == "harmless"]
    s = summarize_refusals(harmful, harmless)
    return {
        "method": method, "group": group, "n_harmful": s.n_harmful, "n_harmless": s.n_harmless,
        "harmful_refusal": s.harmful, "harmful_ci": list(s.harmful_ci),
        "harmless_refusal": s.harmless, "harmless_ci": list(s.harmless_ci),
        "delta": s.delta, "delta_ci": list(s.delta_ci),
    }


def summarize(records: list[dict]) -> dict[str, list[dict]]:
    """Group completion records into per-language and per-tier summaries.

    Returns:
        ``{"languages": [...], "tiers": [...], "means": [...]}``. Language
        and tier rows hold the method, the group, prompt counts, refusal
        rates in percent, Delta in points and their 95% bootstrap
        intervals. Mean rows hold, per method, the unweighted mean of its
        language rows (the published comparison's summary statistic) and
        the languages averaged.
    """
    by_method: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_method[record["method"]].append(record)
    languages, tiers = [], []
    for method, items in by_method.items():
        present = {r["lang"] for r in items}
        for lang in [code for code in ALL_LANGUAGES if code in present]:
            languages.append(_row(method, lang, [r for r in items if r["lang"] == lang]))
        for tier in TIERS:
            members = [r for r in items if tier_of(r["lang"]) == tier]
            if members:
                tiers.append(_row(method, tier, members))
    return {"languages": languages, "tiers": tiers, "means": _means(languages)}


def _means(languages: list[dict]) -> list[dict]:
    rows = []
    for method in dict.fromkeys(r["method"] for r in languages):
        mine = [r for r in languages if r["method"] == method]
        rows.append({
            "method": method, "languages": [r["group"] for r in mine],
            **{key: sum(r[key] for r in mine) / len(mine)
               for key in ("harmful_refusal", "harmless_refusal", "delta")},
        })
    return rows


def _format(value: float, ci: list[float]) -> str:
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _markdown(summary: dict[str, list[dict]], judge: str) -> str:
    lines = [f"Refusals judged by: {judge}. Rates in percent, Delta in points, 95% bootstrap "
             "intervals in brackets.", "",
             "## Mean over languages", "",
             "Unweighted means of the language rows below; compare methods only over the "
             "same languages.", "",
             "| method | languages | harmful refusal | harmless refusal | Delta |",
             "|---|---|---|---|---|"]
    for row in summary["means"]:
        lines.append(f"| {row['method']} | {len(row['languages'])} | "
                     f"{row['harmful_refusal']:.1f} | {row['harmless_refusal']:.1f} | "
                     f"{row['delta']:.1f} |")
    methods = [row["method"] for row in summary["means"]]
    langs = list(dict.fromkeys(r["group"] for r in summary["languages"]))
    delta = {(r["method"], r["group"]): r["delta"] for r in summary["languages"]}
    lines += ["", "## Delta by language", "",
              "| language | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for lang in langs:
        cells = [f"{delta[m, lang]:.0f}" if (m, lang) in delta else "" for m in methods]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines.append("")
    for title, rows in (("Tiers", summary["tiers"]), ("Languages", summary["languages"])):
        lines += [f"## {title}", "",
                  "| method | group | n | harmful refusal | harmless refusal | Delta |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['method']} | {row['group']} | {row['n_harmful']}+{row['n_harmless']} | "
                f"{_format(row['harmful_refusal'], row['harmful_ci'])} | "
                f"{_format(row['harmless_refusal'], row['harmless_ci'])} | "
                f"{_format(row['delta'], row['delta_ci'])} |")
        lines.append("")
    return "\n".join(lines)


def _plot(summary: dict[str, list[dict]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    methods = list(dict.fromkeys(r["method"] for r in summary["tiers"]))
    tiers = [t for t in TIERS if any(r["group"] == t for r in summary["tiers"])]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    width = 0.8 / max(1, len(methods))
    for axis, key, title in ((axes[0], "harmful_refusal", "harmful prompts"),
                             (axes[1], "harmless_refusal", "harmless prompts")):
        for k, method in enumerate(methods):
            values = [next((r[key] for r in summary["tiers"]
                            if r["method"] == method and r["group"] == t), np.nan) for t in tiers]
            axis.bar(np.arange(len(tiers)) + k * width, values, width, label=method)
        axis.set_xticks(np.arange(len(tiers)) + width * (len(methods) - 1) / 2, tiers)
        axis.set_title(f"refusal rate, {title}")
        axis.set_ylim(0, 100)
    axes[0].set_ylabel("percent")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    paths.append(out / "refusal_by_tier.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)

    langs = list(dict.fromkeys(r["group"] for r in summary["languages"]))
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * len(langs) * max(1, len(methods)) / 2), 4))
    for k, method in enumerate(methods):
        values = [next((r["delta"] for r in summary["languages"]
                        if r["method"] == method and r["group"] == g), np.nan) for g in langs]
        axis.bar(np.arange(len(langs)) + k * width, values, width, label=method)
    axis.set_xticks(np.arange(len(langs)) + width * (len(methods) - 1) / 2, langs)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_ylabel("Delta (points)")
    axis.set_title("selectivity per language")
    axis.legend(fontsize=8)
    figure.tight_layout()
    paths.append(out / "delta_by_language.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    return paths


def write_report(records: list[dict], out: Path, judge: str) -> list[Path]:
    """Write summary.json, summary.csv, summary.md and the two plots; return their paths."""
    summary = summarize(records)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.json", out / "summary.csv", out / "summary.md"]
    paths[0].write_text(json.dumps({"judge": judge, **summary}, indent=1), encoding="utf-8")
    with paths[1].open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["level", "method", "group", "n_harmful", "n_harmless",
                         "harmful_refusal", "harmless_refusal", "delta", "delta_low",
                         "delta_high"])
        for level in ("tiers", "languages"):
            for r in summary[level]:
                writer.writerow([level, r["method"], r["group"], r["n_harmful"], r["n_harmless"],
                                 f"{r['harmful_refusal']:.2f}", f"{r['harmless_refusal']:.2f}",
                                 f"{r['delta']:.2f}", f"{r['delta_ci'][0]:.2f}",
                                 f"{r['delta_ci'][1]:.2f}"])
    paths[2].write_text(_markdown(summary, judge), encoding="utf-8")
    if summary["tiers"]:
        paths += _plot(summary, out)
    return paths
