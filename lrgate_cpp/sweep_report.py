"""Tables and a heat map of a layer and lambda sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["write_sweep_report"]


def _cell(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _markdown(rows: list[dict], header: list[str]) -> str:
    lines = [*header, "",
             "Refusal rates in percent, Delta (harmful minus harmless refusal) in points with "
             "its 95% bootstrap interval. 'routed' is the percent of harmful / harmless "
             "prompts the gate sent down the harmful route. The first row is the model "
             "without the gate.", "",
             "| layer | lambda | alpha | val AUC | harmful refusal | harmless refusal | Delta "
             "| routed (harmful / harmless) | utility accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        layer = "none" if row["layer"] is None else str(row["layer"])
        low, high = row["delta_ci"]
        routed = (f"{_cell(row['routed_harmful_of_harmful'], 0)} / "
                  f"{_cell(row['routed_harmful_of_harmless'], 0)}")
        utility = "-"
        if row["utility_accuracy"] is not None:
            utility = f"{row['utility_accuracy']:.1f} (n={row['utility_n']})"
        lines.append(
            f"| {layer} | {_cell(row['lambda'], 2) if row['lambda'] is not None else '-'} "
            f"| {_cell(row['alpha'], 2)} | {_cell(row['val_auc'], 3)} "
            f"| {_cell(row['harmful_refusal'])} | {_cell(row['harmless_refusal'])} "
            f"| {_cell(row['delta'])} [{_cell(low)}, {_cell(high)}] | {routed} | {utility} |")
    return "\n".join(lines) + "\n"


def _heat_map(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    gated = [r for r in rows if r["layer"] is not None]
    layers = sorted({r["layer"] for r in gated})
    lambdas = sorted({r["lambda"] for r in gated})
    grid = np.full((len(layers), len(lambdas)), np.nan)
    for r in gated:
        grid[layers.index(r["layer"]), lambdas.index(r["lambda"])] = r["delta"]
    baseline = next((r["delta"] for r in rows if r["layer"] is None), float("nan"))

    figure, axis = plt.subplots(figsize=(1.4 * len(lambdas) + 2.5, 0.7 * len(layers) + 2))
    image = axis.imshow(grid, cmap="RdBu", vmin=-100, vmax=100, aspect="auto")
    for i in range(len(layers)):
        for j in range(len(lambdas)):
            if not np.isnan(grid[i, j]):
                axis.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=9)
    axis.set_xticks(range(len(lambdas)), [f"{lam:g}" for lam in lambdas])
    axis.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    axis.set_xlabel("lambda (alpha is proportional to it)")
    axis.set_ylabel("layer")
    axis.set_title(f"Delta (points) of the gate; without the gate {baseline:.0f}")
    figure.colorbar(image, ax=axis, label="Delta (points)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_sweep_report(rows: list[dict], out: Path, header: list[str] | None = None,
                       extra: dict | None = None) -> list[Path]:
    """Write ``sweep.json``, ``sweep.md`` and ``sweep_delta.png`` into ``out``.

    Args:
        rows: rows from :func:`lrgate_cpp.sweep.run_sweep`.
        out: output folder.
        header: Markdown lines put above the table (command, sample sizes, time).
        extra: more fields for the JSON file.

    Returns:
        the paths written.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "sweep.json", out / "sweep.md", out / "sweep_delta.png"]
    paths[0].write_text(json.dumps({**(extra or {}), "rows": rows}, indent=1), encoding="utf-8")
    paths[1].write_text(_markdown(rows, header or ["# Layer and lambda sweep"]),
                        encoding="utf-8")
    _heat_map(rows, paths[2])
    return paths
