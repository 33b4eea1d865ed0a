"""``lrgate chat`` run as a user runs it: in a pseudo-terminal, with --prompt, and on stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.languages import ALL_LANGUAGES, LANGUAGE_NAMES

pytestmark = pytest.mark.model

LRGATE = str(Path(sys.executable).with_name("lrgate"))
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "smollm2-135m.gguf"
# One thread: llama.cpp's worker threads spin while they wait, which costs
# far more than it saves on a shared 2-core machine.
BASE = ["chat", "--model", "smollm2-135m", "--threads", "1", "--n-ctx", "1024"]
PROMPT = "What is the capital of France?"
# The bundle is refitted from time to time, so the languages it calibrates
# are read from it rather than assumed.
_LOADED = GateBundle.load(BUNDLE)
CALIBRATED = next(iter(_LOADED.calibrations), None)
UNCALIBRATED = next(code for code in ALL_LANGUAGES
                    if code not in _LOADED.source_languages and code not in _LOADED.calibrations)
LONG_REPLY = "Write a very long essay about the history of Rome, with many sections."


def run_chat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LRGATE, *BASE, *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def terminal() -> pexpect.spawn:
    child = pexpect.spawn(LRGATE, [*BASE, "--lang", "en", "--max-tokens", "2000"],
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect_exact(">>> ")
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_interactive_session(terminal):
    terminal.sendline(PROMPT)
    terminal.expect_exact("Paris")
    terminal.expect_exact(">>> ")

    terminal.sendline("/gate")
    terminal.expect(r"gate \(on\): route (harmful|harmless), logit [-+]\d")
    terminal.expect_exact("lang en, budget 0")
    terminal.expect_exact(">>> ")

    terminal.sendline("/lang de")
    terminal.expect_exact("language: de (German)")
    terminal.expect_exact(">>> ")
    terminal.sendline(f"/lang {UNCALIBRATED}")
    terminal.expect_exact(f"warning: language '{UNCALIBRATED}' is not calibrated")
    terminal.expect_exact(f"language: {UNCALIBRATED} ({LANGUAGE_NAMES[UNCALIBRATED]})")
    terminal.expect_exact(">>> ")
    terminal.sendline("/lang xx")
    terminal.expect_exact("unknown language code 'xx'; the bundle is calibrated for: en")
    terminal.expect_exact(">>> ")

    terminal.sendline("/help")
    terminal.expect_exact("/reset")
    terminal.expect_exact(">>> ")
    terminal.sendline("   ")
    terminal.sendline("/reset")
    terminal.expect_exact("conversation reset")
    terminal.expect_exact(">>> ")

    terminal.sendeof()
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0


def test_interactive_ctrl_c_stops_reply(terminal):
    terminal.sendline(LONG_REPLY)
    terminal.expect_exact(LONG_REPLY + "\r\n")  # the terminal's echo of the input
    terminal.expect(r"\S+\s+\S+\s+\S+\s+\S+")  # a few words of the reply are out
    terminal.sendintr()
    terminal.expect_exact("[stopped]")
    terminal.expect_exact(">>> ")

    terminal.sendline("/gate")
    terminal.expect_exact("lang en")
    terminal.expect_exact(">>> ")
    terminal.sendline(PROMPT)
    terminal.expect_exact("Paris")
    terminal.expect_exact(">>> ")

    terminal.sendline("/quit")
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0


def test_prompt_prints_only_reply():
    result = run_chat("--lang", "en", "--prompt", PROMPT, "--max-tokens", "24")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "gate" not in result.stdout
    assert result.stdout.endswith("\n")


def test_stdin_prompt_matches_option():
    from_option = run_chat("--lang", "en", "--prompt", PROMPT, "--max-tokens", "24")
    from_stdin = run_chat("--lang", "en", "--max-tokens", "24", stdin=PROMPT + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_option.stdout


@pytest.mark.skipif(CALIBRATED is None, reason="the SmolLM2 bundle calibrates no language")
def test_json_output():
    result = run_chat("--lang", str(CALIBRATED), "--prompt", PROMPT, "--json",
                      "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["reply"]
    assert summary["route"] in ("harmful", "harmless")
    assert summary["lang"] == CALIBRATED
    assert summary["budget"] == _LOADED.calibrations[str(CALIBRATED)].budget
    assert summary["threshold"] == pytest.approx(_LOADED.calibrations[str(CALIBRATED)].threshold)
    assert 0.0 <= summary["probability"] <= 1.0
    expected_route = "harmful" if summary["logit"] >= summary["threshold"] else "harmless"
    assert summary["route"] == expected_route
    assert summary["gate"] is True


def test_json_forced_route_and_no_gate():
    forced = json.loads(run_chat("--lang", "en", "--prompt", PROMPT, "--json",
                                 "--max-tokens", "4", "--route", "harmful").stdout)
    plain = json.loads(run_chat("--lang", "en", "--prompt", PROMPT, "--json",
                                "--max-tokens", "4", "--no-gate").stdout)
    assert forced["route"] == "harmful"
    assert forced["forced_route"] == "harmful"
    assert plain["route"] == "none"
    assert plain["gate"] is False


def test_uncalibrated_language_warns_one_line():
    result = run_chat("--lang", UNCALIBRATED, "--prompt", PROMPT, "--max-tokens", "4",
                      "--show-gate")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1
    assert f"'{UNCALIBRATED}' is not calibrated" in warnings[0]
    assert any(line.startswith("gate (on):") and "budget 0" in line for line in lines)


def test_unknown_language_is_usage_error():
    result = run_chat("--lang", "xx", "--prompt", PROMPT)
    assert result.returncode == 2
    assert "unknown language code 'xx'" in result.stderr
    assert "calibrated for: en de fr" in result.stderr


def test_missing_model_file():
    result = subprocess.run([LRGATE, "chat", "--model", "/no/such/model.gguf", "--lang", "en",
                             "--prompt", PROMPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "model file /no/such/model.gguf not found" in result.stderr


def test_mismatched_bundle():
    result = subprocess.run([LRGATE, "chat", "--model", "qwen2.5-coder-0.5b", "--bundle",
                             str(BUNDLE), "--lang", "en", "--prompt", PROMPT],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "fitted on Smollm2" in result.stderr
    assert "use a bundle fitted on this model" in result.stderr


def test_empty_prompt_rejected():
    result = run_chat("--lang", "en", "--prompt", "  ")
    assert result.returncode == 2
    assert "the prompt is empty" in result.stderr
    from_stdin = run_chat("--lang", "en", stdin="\n")
    assert from_stdin.returncode == 2


def test_over_long_prompt_rejected():
    result = run_chat("--lang", "en", "--prompt", "word " * 3000)
    assert result.returncode == 1
    assert "context window is" in result.stderr
    assert result.stdout == ""


def test_no_gate_with_route_rejected():
    result = run_chat("--lang", "en", "--prompt", PROMPT, "--no-gate", "--route", "harmful")
    assert result.returncode == 2
    assert "--no-gate and --route" in result.stderr
