"""The benchmark scripts run end to end on a real model (no timing checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

@pytest.mark.model
def test_hook_overhead_runs(tmp_path: Path) -> None:
    script = load_benchmark("hook_overhead")
    out = tmp_path / "hook_overhead.json"

    status = script.main(["--models", "smollm2-135m", "--repeats", "1", "--prompt-tokens", "24",
                          "--decode-tokens", "3", "--max-other-cpu", "1",
                          "--out", str(out)])

    assert status == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    rows = result["results"]
    assert [row["config"] for row in rows] == list(script.CONFIGS)
    for row in rows:
        assert row["model"] == "smollm2-135m"
        assert row["decode_tokens_per_s"] > 0, row["config"]
        assert row["prefill_tokens_per_s"] > 0, row["config"]
        assert len(row["decode_samples"]) == 1, row["config"]
        assert len(row["prefill_samples"]) == 1, row["config"]
    assert rows[0]["decode_ratio"] == pytest.approx(1.0)
    assert result["machine"]["threads"] == 2
    assert "synthetic" in result["readout_note"]
