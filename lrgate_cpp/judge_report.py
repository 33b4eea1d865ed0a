"""Markdown and JSON reports of the refusal-judge validation.

The rows come from :func:`lrgate_cpp.judge_validation.validate`: one dict
per model and language plus a pooled row, each holding one agreement dict
(n, accuracy, kappa, label_rate, predicted_rate) per judge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["format_markdown", "write_reports"]

_JUDGE_TITLES = {
    "lexicon": "lexicon",
    "substring_source": "source substring list",
    "model_judge_sample": "model judge (sample)",
    "lexicon_sample": "lexicon (same sample)",
}


def _number(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _short_model(model: str) -> str:
    return model.split("/")[-1]


def format_markdown(rows: list[dict[str, object]], meta: dict[str, object]) -> str:
    """Render the validation rows and run settings as a Markdown page."""
    judges = [key for key in _JUDGE_TITLES if key in rows[0]]
    lines = [
        "# Refusal judge validation",
        "",
        f"Reference labels: WildGuard `refusal` labels of the labelled responses "
        f"({meta['n_files']} files of replies to the 572 PolyRefuse harmful test prompts). "
        f"Scored split: **{meta['split']}** (odd record indices of every file). The lexicon's "
        "phrase lists were tuned only on the development half (even indices), so these are "
        "the headline numbers.",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Wall time: {meta['wall_time_s']:.0f} s on {meta['machine']}.",
        "",
    ]
    if "model_judge" in meta:
        lines += [
            f"Model judge: `{meta['model_judge']}`, threshold {meta['threshold']:.3f} on the "
            f"refusal score, fitted on {meta['calibration_size']} development-half replies "
            f"({meta['calibration_per_class']} per label and file). Scored on a stratified "
            f"sample of the held-out half: up to {meta['per_class']} refusals and "
            f"{meta['per_class']} compliances per file, {meta['sample_size']} replies in all. "
            "The sample is balanced, so its accuracy and kappa are not comparable with the "
            "full-split columns; compare the model judge with the lexicon on the same sample.",
            "",
        ]
    header = ["model", "lang", "n", "refusal rate"]
    for key in judges:
        if key.endswith("_sample"):
            header += [f"{_JUDGE_TITLES[key]} n", f"{_JUDGE_TITLES[key]} acc",
                       f"{_JUDGE_TITLES[key]} kappa"]
        else:
            header += [f"{_JUDGE_TITLES[key]} acc", f"{_JUDGE_TITLES[key]} kappa"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        lexicon = row["lexicon"]
        assert isinstance(lexicon, dict)
        cells = [_short_model(str(row["model"])), str(row["language"]), str(lexicon["n"]),
                 _number(lexicon["label_rate"])]
        for key in judges:
            result = row[key]
            assert isinstance(result, dict)
            if key.endswith("_sample"):
                cells.append(str(result["n"]))
            cells += [_number(result["accuracy"]), _number(result["kappa"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = meta.get("notes")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]  # type: ignore[union-attr]
    return "\n".join(lines) + "\n"


def _json_safe(value: object) -> object:
    # json writes NaN as a bare token that strict parsers reject.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_reports(rows: list[dict[str, object]], meta: dict[str, object],
                  markdown_path: str | Path) -> Path:
    """Write the Markdown page and a JSON file beside it (same stem); returns the JSON path."""
    markdown_path = Path(markdown_path)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(format_markdown(rows, meta), encoding="utf-8")
    json_path = markdown_path.with_suffix(".json")
    payload = _json_safe({"meta": meta, "rows": rows})
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    return json_path
