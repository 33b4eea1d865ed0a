"""The lrgate-versus-PyTorch benchmark runs end to end on SmolLM2 (no timing checks)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import data_root, load_benchmark

# The bench-torch extra; CI installs only the test extras.
TORCH_STACK = ("torch", "transformers", "accelerate")
MISSING = [name for name in TORCH_STACK if importlib.util.find_spec(name) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed; install the extra: pip install -e '.[bench-torch]'")


@pytest.mark.model
def test_vs_torch_runs_smollm(tmp_path: Path) -> None:
    script = load_benchmark("vs_torch")
    out = tmp_path / "vs_torch.json"

    status = script.main(["--models", "smollm2-135m", "--prompts", "2", "--new-tokens", "4",
                          "--repeats", "1", "--data-root", str(data_root()), "--out", str(out)])

    assert status == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["prompts"] == [{"lang": "en", "label": "harmful"},
                                 {"lang": "en", "label": "harmless"}]
    (row,) = result["results"]
    assert row["model"] == "smollm2-135m"
    for stack in ("lrgate", "torch"):
        numbers = row["stacks"][stack]
        assert numbers["extract_prompts_per_s"] > 0, stack
        assert numbers["extract_tokens_per_s"] > numbers["extract_prompts_per_s"], stack
        assert numbers["generate_tokens_per_s"] > 0, stack
        assert 0 < numbers["generated_tokens"] <= 2 * 4, stack
        assert numbers["peak_rss_mib"] >= numbers["rss_after_load_mib"] > 0, stack
    assert row["stacks"]["torch"]["extract_stop_prompts_per_s"] > 0
    assert row["ratios"]["extract_vs_stopped"] > 0
    assert "GOMP_SPINCOUNT" not in row["openmp_environment"]["torch"]
    agreement = row["agreement"]
    assert agreement["same_prompt_tokens"] == 1.0
    assert len(agreement["logits"]["lrgate"]) == 2
    assert len(agreement["logits"]["torch"]) == 2
    # Quantised llama.cpp and dequantised float32 weights give close, not equal, rows.
    assert agreement["row_cosine_min"] > 0.99
    assert agreement["logit_max_abs_diff"] < 2.0
    assert set(row["ratios"]) == {"extract", "extract_vs_stopped", "generate", "peak_memory"}
