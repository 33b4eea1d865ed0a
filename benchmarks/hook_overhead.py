"""Measure what the eval callback costs in decode and prefill throughput.

For each model this script builds one context per configuration, all in one
process and on the same thread count, and times them round-robin so that
drift of the machine (frequency, other processes) reaches every
configuration alike:

- ``plain``: a llama.cpp context with no eval callback.
- ``python-callback``: a ctypes callback written in Python that returns
  False for every ask (``PythonCapture(set())``).
- ``hook-idle``: lrgate's native hook attached, with no operations.
- ``hook-capture``: the native hook copying every row of ``l_out-L``.
- ``hook-gate``: the native hook running a gate at ``l_out-L`` whose
  threshold routes every prompt as harmful, so ``alpha * direction`` is
  added to the last prompt row and every generated row.

The gate's readout is synthetic: random orthonormal rows of rank 10 from a
fixed seed and a random unit direction. The work per row does not depend on
their values, only on the rank and the model width.

Decode throughput is the number of single-token steps per second after a
short chat prompt. Prefill throughput is the number of prompt tokens per
second for one prompt decoded as a single batch. Each timed run starts from
an empty KV cache. The reported figure is the median over repeats.

Run from the repository root, for example::

    python benchmarks/hook_overhead.py --out docs/results/hook_overhead.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from machine_info import read_cpu_model

from lrgate_cpp.hook import Capture, Readout, Route, Rows
from lrgate_cpp.model import Model
from lrgate_cpp.pycallback import PythonCapture
from lrgate_cpp.runtime import Context
from lrgate_cpp.template import encode_messages, template_for
from lrgate_cpp.zoo import resolve_model_path

log = logging.getLogger("hook_overhead")

DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m")
CONFIGS = ("plain", "python-callback", "hook-idle", "hook-capture", "hook-gate")
READOUT_RANK = 10
READOUT_SEED = 1234
GATE_ALPHA = 1.0
# A logit threshold below any finite logit, so every prompt is routed harmful.
HARMFUL_THRESHOLD = -math.inf
READOUT_NOTE = (
    "The hook-gate readout is synthetic (random orthonormal rank-10 rows from seed "
    f"{READOUT_SEED}, a random unit direction, threshold -inf so the route is always "
    "harmful); its speed does not depend on these values."
)

DECODE_PROMPT = "Write one sentence about the sea."
FILLER_TEXT = (
    "The river rises in the hills above the town and runs south through farms, "
    "orchards and two small villages before it reaches the estuary. In spring the "
    "water is high and brown with silt; by late summer it is clear enough to see "
    "the stones on the bottom. Fishermen keep boats at the old mill, and children "
    "swim near the bridge when the current is slow. "
)


@dataclass
class Run:
    """One configuration's context and the hook objects it resets between runs."""

    name: str
    context: Context
    capture: Capture | None = None
    keep: object | None = None  # a Python callback the context must outlive
    decode_samples: list[float] = field(default_factory=list)
    prefill_samples: list[float] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare decode and prefill throughput of a plain llama.cpp context, a "
                    "Python eval callback and lrgate's native hook.")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                        help="short model names or GGUF paths (default: the three test models)")
    parser.add_argument("--threads", type=int, default=2, metavar="N",
                        help="CPU threads for every context (default: 2)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N",
                        help="timed runs per configuration; the median is reported (default: 5)")
    parser.add_argument("--prompt-tokens", type=int, default=256, metavar="N",
                        help="tokens in the prompt timed for prefill, decoded as one batch "
                             "(default: 256)")
    parser.add_argument("--decode-tokens", type=int, default=64, metavar="N",
                        help="single-token decode steps timed after a short prompt (default: 64)")
    parser.add_argument("--max-other-cpu", type=float, default=0.05, metavar="SHARE",
                        help="discard and rerun a repeat during which other processes used more "
                             "than this share of all cores, 0 to 1 (default: 0.05; 1 keeps all)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if not 0 < args.max_other_cpu <= 1:
        parser.error(f"--max-other-cpu must be in (0, 1]; got {args.max_other_cpu}")
    for name in ("threads", "repeats", "prompt_tokens", "decode_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    return args


def describe_machine(threads: int) -> dict[str, object]:
    """Return the CPU model, core counts, thread count, load and library version."""
    cpu = read_cpu_model()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "load_average_start": list(os.getloadavg()),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "python": platform.python_version(),
    }


def read_cpu_seconds() -> tuple[float, float] | None:
    """Return (CPU seconds all processes used, CPU seconds this process used), or None.

    The first figure comes from /proc/stat, so it exists only on Linux. The
    difference between two readings is the CPU time that other processes
    took during a run, which slows the run down.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stream:
            fields = [int(value) for value in stream.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    # user through steal; guest time is already counted in user.
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system


def other_cpu_share(before: tuple[float, float] | None, after: tuple[float, float] | None,
                    wall: float) -> float | None:
    """Return the share of all cores that other processes used between two readings."""
    if before is None or after is None or wall <= 0:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, other) / (wall * (os.cpu_count() or 1))


def build_prompts(model: Model, prompt_tokens: int, decode_tokens: int
                  ) -> tuple[list[int], list[int], list[int]]:
    """Build the prefill prompt, the short decode prompt and the tokens to step with.

    The decode steps feed fixed tokens rather than sampled ones, so that
    every configuration, the gated one included, decodes the same tokens.
    """
    filler: list[int] = []
    while len(filler) < prompt_tokens + decode_tokens:
        filler.extend(model.tokenize(FILLER_TEXT))
    prefix = [model.bos_token] if model.add_bos and model.bos_token >= 0 else []
    prefill_prompt = (prefix + filler)[:prompt_tokens]
    decode_prompt = encode_messages(model, template_for(model),
                                    [{"role": "user", "content": DECODE_PROMPT}])
    return prefill_prompt, decode_prompt, filler[:decode_tokens]


def synthetic_readout(n_embd: int) -> tuple[Readout, np.ndarray]:
    """Return a rank-10 readout with random orthonormal rows, and a random unit direction."""
    rng = np.random.default_rng(READOUT_SEED)
    q, _ = np.linalg.qr(rng.standard_normal((n_embd, READOUT_RANK)))
    readout = Readout(
        basis_t=np.ascontiguousarray(q.T, dtype=np.float32),
        mean=np.zeros(READOUT_RANK, dtype=np.float32),
        scale=np.ones(READOUT_RANK, dtype=np.float32),
        weight=rng.standard_normal(READOUT_RANK).astype(np.float32),
        bias=0.0,
    )
    direction = rng.standard_normal(n_embd)
    direction = (direction / np.linalg.norm(direction)).astype(np.float32)
    return readout, direction


def make_runs(model: Model, node: str, threads: int, n_ctx: int, n_batch: int) -> list[Run]:
    """Create one context per configuration, in the order of CONFIGS."""
    def context(**kwargs: object) -> Context:
        return Context(model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=1, n_threads=threads,
                       **kwargs)  # type: ignore[arg-type]

    runs = [Run("plain", context(hook=False))]

    python_callback = PythonCapture(set())
    runs.append(Run("python-callback", context(hook=False, eval_callback=python_callback.callback),
                    keep=python_callback))

    runs.append(Run("hook-idle", context(hook=True)))

    capture_context = context(hook=True)
    assert capture_context.hook is not None
    # Room for the longest run; the capture is reset after every run.
    capture = capture_context.hook.capture(node, Rows.ALL, capacity=n_ctx)
    runs.append(Run("hook-capture", capture_context, capture=capture))

    gate_context = context(hook=True)
    assert gate_context.hook is not None
    readout, direction = synthetic_readout(model.n_embd)
    gate_context.hook.gate(node, readout, direction, GATE_ALPHA)
    gate_context.hook.configure_sequence(0, threshold=HARMFUL_THRESHOLD)
    runs.append(Run("hook-gate", gate_context))

    assert [run.name for run in runs] == list(CONFIGS)
    return runs


def finish_run(run: Run, expected_rows: int) -> None:
    """Check what the hook did in the run just timed, then reset it for the next one."""
    hook = run.context.hook
    if run.capture is not None:
        if run.capture.dropped or run.capture.count != expected_rows:
            raise RuntimeError(
                f"capture of {run.capture.node} contains {run.capture.count} rows and dropped "
                f"{run.capture.dropped}; expected {expected_rows} rows and none dropped")
        run.capture.reset()
    if run.name == "hook-gate":
        assert hook is not None
        decision = hook.decision(0)
        if not decision.decided or decision.route != Route.HARMFUL:
            raise RuntimeError(
                f"the gate routed the benchmark prompt as {decision.route.name} "
                f"(decided: {decision.decided}); the benchmark needs the harmful route")
    run.context.clear()


def time_decode(run: Run, prompt: list[int], steps: list[int]) -> float:
    """Prefill the short prompt untimed, then return single-token steps per second."""
    context = run.context
    context.prefill({0: prompt})
    start = time.perf_counter()
    for token in steps:
        context.step({0: token})
    elapsed = time.perf_counter() - start
    finish_run(run, len(prompt) + len(steps))
    return len(steps) / elapsed


def time_prefill(run: Run, prompt: list[int]) -> float:
    """Return prompt tokens per second for one prefill of ``prompt`` as a single batch."""
    start = time.perf_counter()
    run.context.prefill({0: prompt})
    elapsed = time.perf_counter() - start
    finish_run(run, len(prompt))
    return len(prompt) / elapsed


def benchmark_model(name: str, threads: int, repeats: int, prompt_tokens: int,
                    decode_tokens: int, max_other_cpu: float) -> list[dict[str, object]]:
    """Time every configuration on one model and return one result row per configuration.

    A repeat during which other processes used more than ``max_other_cpu``
    of all cores is discarded and run again, at most ``3 * repeats``
    attempts in all. On a machine with few cores, another busy process
    slows llama.cpp's spinning OpenMP worker threads by several times, which
    no median can hide.
    """
    model = Model(resolve_model_path(name))
    layer = model.n_layer // 2
    node = f"l_out-{layer}"
    prefill_prompt, decode_prompt, steps = build_prompts(model, prompt_tokens, decode_tokens)
    n_batch = max(len(prefill_prompt), len(decode_prompt))
    n_ctx = max(16, len(prefill_prompt), len(decode_prompt) + len(steps))
    log.info("%s: %d layers, n_embd %d, hooking %s; prefill %d tokens, decode %d steps after "
             "a %d-token prompt", name, model.n_layer, model.n_embd, node, len(prefill_prompt),
             len(steps), len(decode_prompt))

    runs = make_runs(model, node, threads, n_ctx, n_batch)
    kept_shares: list[float | None] = []
    attempts = 0
    try:
        # One untimed round first: the first decode of a context allocates.
        for run in runs:
            time_decode(run, decode_prompt, steps)
            time_prefill(run, prefill_prompt)
        while len(kept_shares) < repeats and attempts < 3 * repeats:
            # Rotate the order as well, so no configuration always runs first.
            order = runs[attempts % len(runs):] + runs[:attempts % len(runs)]
            attempts += 1
            cpu_before = read_cpu_seconds()
            started = time.perf_counter()
            samples = [(run, time_decode(run, decode_prompt, steps),
                        time_prefill(run, prefill_prompt)) for run in order]
            share = other_cpu_share(cpu_before, read_cpu_seconds(), time.perf_counter() - started)
            if share is not None and share > max_other_cpu:
                log.warning("%s: other processes used %.0f%% of the CPUs during attempt %d; "
                            "discarding it", name, 100 * share, attempts)
                continue
            for run, decode, prefill in samples:
                run.decode_samples.append(decode)
                run.prefill_samples.append(prefill)
            kept_shares.append(share)
            log.info("%s: repeat %d of %d done", name, len(kept_shares), repeats)
    finally:
        for run in runs:
            run.context.close()
        model.close()

    if not kept_shares:
        raise RuntimeError(
            f"{name}: other processes used more than {100 * max_other_cpu:.0f}% of the CPUs "
            f"in all {attempts} attempts; rerun on an idle machine or raise --max-other-cpu")
    if len(kept_shares) < repeats:
        log.warning("%s: only %d of %d repeats ran on a quiet enough machine; the medians use "
                    "those", name, len(kept_shares), repeats)

    plain = runs[0]
    plain_decode = statistics.median(plain.decode_samples)
    plain_prefill = statistics.median(plain.prefill_samples)
    rows: list[dict[str, object]] = []
    for run in runs:
        decode = statistics.median(run.decode_samples)
        prefill = statistics.median(run.prefill_samples)
        rows.append({
            "model": name,
            "config": run.name,
            "node": node if run.name in ("hook-capture", "hook-gate") else None,
            "decode_tokens_per_s": decode,
            "decode_ratio": decode / plain_decode,
            "prefill_tokens_per_s": prefill,
            "prefill_ratio": prefill / plain_prefill,
            "decode_samples": run.decode_samples,
            "prefill_samples": run.prefill_samples,
            "repeats_discarded": attempts - len(kept_shares),
            "other_cpu_shares": kept_shares,
        })
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """Render the result rows as a Markdown table."""
    lines = [
        "| model | config | decode tok/s | decode / plain | prefill tok/s | prefill / plain |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['config']} | {row['decode_tokens_per_s']:.1f} | "
            f"{row['decode_ratio']:.3f} | {row['prefill_tokens_per_s']:.1f} | "
            f"{row['prefill_ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON; return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    machine = describe_machine(args.threads)
    started = time.perf_counter()
    rows: list[dict[str, object]] = []
    for name in args.models:
        rows.extend(benchmark_model(name, args.threads, args.repeats, args.prompt_tokens,
                                    args.decode_tokens, args.max_other_cpu))
    machine["load_average_end"] = list(os.getloadavg())
    result = {
        "command": shlex.join(["python", "benchmarks/hook_overhead.py", *arguments]),
        "machine": machine,
        "settings": {
            "models": args.models,
            "threads": args.threads,
            "repeats": args.repeats,
            "prompt_tokens": args.prompt_tokens,
            "decode_tokens": args.decode_tokens,
            "max_other_cpu": args.max_other_cpu,
            "readout_rank": READOUT_RANK,
            "statistic": "median over repeats; ratio = median / median of plain",
        },
        "readout_note": READOUT_NOTE,
        "wall_seconds": time.perf_counter() - started,
        "results": rows,
    }

    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads, "
         f"llama-cpp-python {machine['llama_cpp_python']}")
    print(f"load average at start {machine['load_average_start'][0]:.2f}, at end "
         f"{machine['load_average_end'][0]:.2f}; {args.repeats} repeats, median reported")
    print(f"decode: {args.decode_tokens} single-token steps after a short chat prompt; "
         f"prefill: a {args.prompt_tokens}-token prompt in one batch")
    print(READOUT_NOTE)
    print(format_table(rows))
    for model in args.models:
        row = next(row for row in rows if row["model"] == model)
        shares = [share for share in row["other_cpu_shares"] if share is not None]
        busiest = f"{100 * max(shares):.1f}%" if shares else "unknown"
        print(f"{model}: {len(row['decode_samples'])} repeats kept, "
              f"{row['repeats_discarded']} discarded as disturbed; other processes used at most "
              f"{busiest} of the CPUs during a kept repeat")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("lrgate_cpp.llama_cpp").setLevel(logging.WARNING)
    sys.exit(main())
