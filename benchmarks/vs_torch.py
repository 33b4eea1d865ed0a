"""Compare lrgate with a PyTorch and transformers hook stack on the same prompts.

For each model, two worker processes (``vs_torch_stacks.py``) load the same
GGUF file: one through lrgate and llama.cpp, one through transformers,
which dequantises it to float32. Both run the same PolyRefuse test prompts
(harmful and harmless, in several languages) on the same thread count.
The driver sends them the same requests round-robin, alternating which
stack goes first, so that drift of a shared machine reaches both alike:

- extraction: the residual row after decoder block L at the last prompt
  token of every prompt (prompts/s and prompt tokens/s). lrgate ends each
  forward pass after block L; the torch stack is timed twice, with the
  whole forward pass and with its hook ending the pass after block L;
- gated generation: greedy replies of up to ``--new-tokens`` tokens, one
  prompt at a time, with the gate deciding at the last prompt row and
  adding or ablating the bundle's direction (generated tokens/s, prefill
  included).

Each worker reports its peak resident memory (``VmHWM``) when it quits.
Agreement compares the two stacks' gate logits and decisions on every
prompt, and the cosine similarity of their extracted rows. They differ a
little, because lrgate reads the quantised weights and transformers their
float32 dequantisation.

The gate comes from the model's bundle in ``--bundles``. For a model
without one, the driver fits a throwaway gate on a few train prompts'
activations and marks the gate as throwaway in the output.

Run from the repository root, for example::

    python benchmarks/vs_torch.py --prompts 16 --out docs/results/vs_torch.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from machine_info import read_cpu_model

import lrgate_cpp
from lrgate_cpp.bundle import GateBundle, UncalibratedLanguageWarning
from lrgate_cpp.data import Prompt
from lrgate_cpp.sources import load_language
from lrgate_cpp.zoo import KNOWN_MODELS, resolve_model_path

log = logging.getLogger("vs_torch")

WORKER = Path(__file__).resolve().with_name("vs_torch_stacks.py")
REPO_ROOT = Path(__file__).resolve().parents[1]
STACKS = ("lrgate", "torch")
# Timed requests per stack; lrgate always ends extraction after block L.
OPS = {"lrgate": ("extract", "generate"), "torch": ("extract", "extract-stop", "generate")}
OPENMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
DEFAULT_MODELS = ("qwen2.5-coder-0.5b", "smollm2-135m")
DEFAULT_LANGS = ("en", "de", "ja", "ar", "th", "yo")
# Targets for lrgate against the PyTorch stack.
TARGET_SPEEDUP = 3.0
TARGET_MEMORY_RATIO = 0.5
# Train prompts per class and language for a throwaway gate.
THROWAWAY_PER_CLASS = 8
THROWAWAY_LANGS = ("en", "de", "fr", "es", "zh")
VERSION_PACKAGES = ("llama-cpp-python", "torch", "transformers", "accelerate", "gguf", "numpy")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare activation extraction, gated generation, peak memory and gate "
                    "agreement of lrgate and a transformers forward-hook stack.")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                        help="short model names or GGUF paths (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=16, metavar="N",
                        help="PolyRefuse test prompts, alternating harmful and harmless over "
                             "the languages (default: 16)")
    parser.add_argument("--langs", nargs="+", default=list(DEFAULT_LANGS), metavar="LANG",
                        help="languages the prompts cycle through (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, metavar="N",
                        help="CPU threads for both stacks (default: 2)")
    parser.add_argument("--new-tokens", type=int, default=64, metavar="N",
                        help="maximum tokens generated per prompt, greedy (default: 64)")
    parser.add_argument("--repeats", type=int, default=2, metavar="N",
                        help="timed rounds per stack; the median is reported (default: 2)")
    parser.add_argument("--batch", type=int, default=8, metavar="N",
                        help="prompts per extraction batch in both stacks (default: 8)")
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("LRGATE_DATA", "../shared/data")),
                        metavar="DIR",
                        help="data folder containing polyrefuse/ (default: $LRGATE_DATA or "
                             "../shared/data)")
    parser.add_argument("--bundles", type=Path, default=REPO_ROOT / "bundles", metavar="DIR",
                        help="folder of gate bundles named <model>.gguf (default: bundles/)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    for name in ("prompts", "threads", "new_tokens", "repeats", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    return args


def describe_machine(threads: int) -> dict[str, Any]:
    """Return the CPU model, core count, thread count, load average and package versions."""
    cpu = read_cpu_model()
    versions = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "load_average_start": list(os.getloadavg()), "versions": versions}


def select_prompts(root: Path, langs: Sequence[str], count: int) -> list[Prompt]:
    """Pick ``count`` test prompts, alternating harmful and harmless and cycling languages."""
    pools = {lang: load_language(root, lang, "test") for lang in langs}
    used: dict[tuple[str, str], int] = {}
    chosen: list[Prompt] = []
    for i in range(count):
        lang = langs[(i // 2) % len(langs)]
        label = "harmful" if i % 2 == 0 else "harmless"
        pool = [p for p in pools[lang] if p.label == label]
        k = used.get((lang, label), 0)
        if k >= len(pool):
            raise ValueError(f"only {len(pool)} {label} test prompts in {lang!r}; ask for "
                             "fewer --prompts or add languages")
        used[(lang, label)] = k + 1
        chosen.append(pool[k])
    return chosen


def fit_throwaway_bundle(model_path: Path, root: Path, threads: int) -> GateBundle:
    """Fit a budget-0 gate at the middle layer from a few train prompts per class and language."""
    from lrgate_cpp.data import encode_labels
    from lrgate_cpp.reader import last_prompt_rows
    from lrgate_cpp.fitting import fit_gate
    from lrgate_cpp.model import Model

    prompts = [p for lang in THROWAWAY_LANGS
               for p in load_language(root, lang, "train", limit=THROWAWAY_PER_CLASS)]
    with Model(model_path) as model:
        layer = model.n_layer // 2
        rows = last_prompt_rows(model, [p.text for p in prompts], layer, n_threads=threads)
        fit = fit_gate(rows, encode_labels(prompts), [p.lang for p in prompts])
        return GateBundle.from_fit(fit, model.fingerprint(), layer)


def load_gate(name: str, model_path: Path, args: argparse.Namespace) -> tuple[GateBundle, str]:
    """Return the model's bundle and where it came from, fitting a throwaway one if none exists."""
    # A short name such as "qwen2.5-coder-0.5b" contains dots, so only a path loses its suffix.
    stem = name if name in KNOWN_MODELS else Path(name).stem
    path = args.bundles / f"{stem}.gguf"
    if path.exists():
        return GateBundle.load(path), str(path)
    log.warning("%s: no bundle at %s; fitting a throwaway gate on %d train prompts per class "
                "in %s", name, path, THROWAWAY_PER_CLASS, " ".join(THROWAWAY_LANGS))
    bundle = fit_throwaway_bundle(model_path, args.data_root, args.threads)
    return bundle, (f"throwaway: fitted by this run at layer {bundle.layer} on "
                    f"{THROWAWAY_PER_CLASS} train prompts per class in "
                    f"{' '.join(THROWAWAY_LANGS)}")


def write_job(folder: Path, bundle: GateBundle, prompts: Sequence[Prompt]) -> None:
    """Write the prompts and each prompt's readout and threshold for the workers."""
    readouts = []
    for prompt in prompts:
        with warnings.catch_warnings():
            # An uncalibrated language falls back to the budget-0 readout in both stacks.
            warnings.simplefilter("ignore", UncalibratedLanguageWarning)
            readouts.append(bundle.make_readout(prompt.lang))
    (folder / "prompts.json").write_text(json.dumps({"texts": [p.text for p in prompts]}),
                                         encoding="utf-8")
    np.savez(
        folder / "gate.npz",
        layer=np.int64(bundle.layer),
        alpha=np.float64(bundle.alpha),
        direction=bundle.v_hrl,
        basis_t=bundle.basis_t,
        means=np.stack([r.mean_ for r, _ in readouts]),
        scales=np.stack([r.scale_ for r, _ in readouts]),
        weights=np.stack([r.coef_ for r, _ in readouts]),
        biases=np.array([float(r.intercept_) for r, _ in readouts]),
        thresholds=np.array([threshold for _, threshold in readouts]),
    )


class Worker:
    """One stack's worker process and its request channel."""

    def __init__(self, stack: str, model_path: Path, folder: Path,
                 args: argparse.Namespace) -> None:
        self.stack = stack
        self.log_path = folder / f"{stack}.log"
        self._log: IO[str] = self.log_path.open("w", encoding="utf-8")
        environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads),
                           TOKENIZERS_PARALLELISM="false")
        if stack == "torch" and lrgate_cpp.OPENMP_SPIN_SET:
            # Importing lrgate_cpp here set lrgate's OpenMP spin count; the
            # torch stack runs with its own library defaults instead.
            environment.pop("GOMP_SPINCOUNT", None)
        self.openmp = {key: environment[key] for key in OPENMP_VARIABLES if key in environment}
        # The job folder is the working directory, because a child that put
        # the repository root on sys.path would import the repository's
        # kernels/ folder in place of transformers' dependency "kernels".
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "--stack", stack, "--model", str(model_path),
             "--job", str(folder), "--threads", str(args.threads), "--batch", str(args.batch),
             "--new-tokens", str(args.new_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            cwd=folder, env=environment)
        self.ready = self.receive("ready")

    def request(self, op: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(op + "\n")
        self.process.stdin.flush()
        return self.receive(op)

    def receive(self, op: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self._log.flush()
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"the {self.stack} worker exited with status "
                               f"{self.process.returncode} before replying to {op!r}; "
                               f"its log ends:\n{tail}")
        message = json.loads(line)
        if message.get("op") != op:
            raise RuntimeError(f"the {self.stack} worker replied {message} to {op!r}")
        return message

    def close(self) -> dict[str, Any]:
        """Ask the worker to quit; return its memory report."""
        try:
            return self.request("quit")["memory"]
        finally:
            self.process.wait(timeout=60)
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def compare_outputs(folder: Path) -> dict[str, Any]:
    """Compare the two stacks' extracted rows, gate logits and decisions, and replies."""
    rows = {stack: np.load(folder / f"rows_{stack}.npy", allow_pickle=False) for stack in STACKS}
    gates = {stack: json.loads((folder / f"gate_{stack}.json").read_text("utf-8"))
             for stack in STACKS}
    a, b = rows["lrgate"].astype(np.float64), rows["torch"].astype(np.float64)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    logits = {stack: np.array([g["logit"] for g in gates[stack]]) for stack in STACKS}
    routes = {stack: [g["route"] for g in gates[stack]] for stack in STACKS}
    n = len(routes["lrgate"])
    pairs = list(zip(gates["lrgate"], gates["torch"]))
    return {
        "decision_agreement": sum(x == y for x, y in zip(routes["lrgate"], routes["torch"])) / n,
        "logit_pearson": pearson(logits["lrgate"], logits["torch"]),
        "logit_mean_abs_diff": float(np.mean(np.abs(logits["lrgate"] - logits["torch"]))),
        "logit_max_abs_diff": float(np.max(np.abs(logits["lrgate"] - logits["torch"]))),
        "row_cosine_mean": float(np.mean(cosine)),
        "row_cosine_min": float(np.min(cosine)),
        "row_relative_l2_mean": float(np.mean(relative)),
        "same_prompt_tokens": sum(x["prompt"] == y["prompt"] for x, y in pairs) / n,
        "same_reply_tokens": sum(x["reply"] == y["reply"] for x, y in pairs) / n,
        "harmful_routes": {stack: routes[stack].count("harmful") for stack in STACKS},
        "logits": {stack: logits[stack].tolist() for stack in STACKS},
    }


def run_rounds(workers: dict[str, Worker], repeats: int) -> tuple[dict[str, Any], list[float]]:
    """Send every timed request round-robin; return the samples per stack and the loads seen."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        stack: {op: [] for op in OPS[stack]} for stack in STACKS}
    loads: list[float] = []
    for round_index in range(repeats):
        order = STACKS if round_index % 2 == 0 else STACKS[::-1]
        for op in ("extract", "extract-stop", "generate"):
            for stack in order:
                if op in OPS[stack]:
                    samples[stack][op].append(workers[stack].request(op))
                    loads.append(os.getloadavg()[0])
        log.info("round %d of %d done (load average %.2f)", round_index + 1, repeats, loads[-1])
    return samples, loads


def summarize_stack(samples: dict[str, list[dict[str, Any]]], ready: dict[str, Any],
                    memory: dict[str, int]) -> dict[str, Any]:
    extract = samples["extract"]
    generate = samples["generate"]
    stopped = samples.get("extract-stop")
    extra = {} if not stopped else {
        "extract_stop_prompts_per_s": statistics.median(
            s["prompts"] / s["seconds"] for s in stopped),
        "extract_stop_tokens_per_s": statistics.median(
            s["prompt_tokens"] / s["seconds"] for s in stopped),
        "extract_stop_seconds": [s["seconds"] for s in stopped],
    }
    return {
        **extra,
        "extract_prompts_per_s": statistics.median(s["prompts"] / s["seconds"] for s in extract),
        "extract_tokens_per_s": statistics.median(
            s["prompt_tokens"] / s["seconds"] for s in extract),
        "generate_tokens_per_s": statistics.median(
            s["new_tokens"] / s["seconds"] for s in generate),
        "generated_tokens": generate[0]["new_tokens"],
        "extract_seconds": [s["seconds"] for s in extract],
        "generate_seconds": [s["seconds"] for s in generate],
        "load_seconds": ready["load_seconds"],
        "rss_after_load_mib": ready["memory_after_load"].get("vmrss_kib", 0) / 1024,
        "peak_rss_mib": memory.get("vmhwm_kib", memory["ru_maxrss_kib"]) / 1024,
    }


def benchmark_model(name: str, prompts: Sequence[Prompt], args: argparse.Namespace
                    ) -> dict[str, Any]:
    """Run both stacks on one model and return its result record."""
    model_path = resolve_model_path(name)
    bundle, gate_source = load_gate(name, model_path, args)
    with tempfile.TemporaryDirectory(prefix="vs_torch_") as temp:
        folder = Path(temp)
        write_job(folder, bundle, prompts)
        workers: dict[str, Worker] = {}
        try:
            # Loaded one after the other, so that neither load slows the other.
            for stack in STACKS:
                log.info("%s: loading the %s stack", name, stack)
                workers[stack] = Worker(stack, model_path, folder, args)
            for stack in STACKS:
                workers[stack].request("warmup")
            samples, loads = run_rounds(workers, args.repeats)
            memory = {stack: workers[stack].close() for stack in STACKS}
        finally:
            for worker in workers.values():
                worker.kill()
        stacks = {stack: summarize_stack(samples[stack], workers[stack].ready, memory[stack])
                  for stack in STACKS}
        agreement = compare_outputs(folder)
    ours, theirs = stacks["lrgate"], stacks["torch"]
    ratios = {
        "extract": ours["extract_prompts_per_s"] / theirs["extract_prompts_per_s"],
        "extract_vs_stopped": ours["extract_prompts_per_s"] / theirs["extract_stop_prompts_per_s"],
        "generate": ours["generate_tokens_per_s"] / theirs["generate_tokens_per_s"],
        "peak_memory": ours["peak_rss_mib"] / theirs["peak_rss_mib"],
    }
    return {
        "model": name,
        "model_file": str(model_path),
        "model_file_mib": model_path.stat().st_size / 2**20,
        "gate": gate_source,
        "layer": bundle.layer,
        "alpha": bundle.alpha,
        "stacks": stacks,
        "openmp_environment": {stack: worker.openmp for stack, worker in workers.items()},
        "ratios": ratios,
        "targets_met": {
            "extract": ratios["extract"] >= TARGET_SPEEDUP,
            "extract_vs_stopped": ratios["extract_vs_stopped"] >= TARGET_SPEEDUP,
            "generate": ratios["generate"] >= TARGET_SPEEDUP,
            "peak_memory": ratios["peak_memory"] < TARGET_MEMORY_RATIO,
        },
        "agreement": agreement,
        "load_average_during": [min(loads), max(loads)],
    }


def format_tables(results: Sequence[dict[str, Any]]) -> str:
    """Render the speed and memory table and the agreement table as Markdown."""
    lines = [
        "| model | stack | extract prompts/s | extract tok/s | gated gen tok/s | "
        "peak RSS MiB | RSS after load MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        model = result["model"]
        for stack in STACKS:
            s = result["stacks"][stack]
            lines.append(
                f"| {model} | {stack} | {s['extract_prompts_per_s']:.2f} | "
                f"{s['extract_tokens_per_s']:.0f} | {s['generate_tokens_per_s']:.1f} | "
                f"{s['peak_rss_mib']:.0f} | {s['rss_after_load_mib']:.0f} |")
        s = result["stacks"]["torch"]
        lines.append(f"| {model} | torch, stopped after block L | "
                     f"{s['extract_stop_prompts_per_s']:.2f} | "
                     f"{s['extract_stop_tokens_per_s']:.0f} | | | |")
        r = result["ratios"]
        lines.append(f"| {model} | lrgate / torch | {r['extract']:.2f}x | "
                     f"{r['extract']:.2f}x | {r['generate']:.2f}x | {r['peak_memory']:.2f}x | |")
        lines.append(f"| {model} | lrgate / torch stopped | {r['extract_vs_stopped']:.2f}x | "
                     f"{r['extract_vs_stopped']:.2f}x | | | |")
    lines += [
        "",
        "| model | decisions agree | logit Pearson r | mean abs logit diff | row cosine "
        "mean (min) | same prompt tokens | same replies |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        a = result["agreement"]
        r = "n/a" if a["logit_pearson"] is None else f"{a['logit_pearson']:.4f}"
        lines.append(
            f"| {result['model']} | {100 * a['decision_agreement']:.0f}% | {r} | "
            f"{a['logit_mean_abs_diff']:.3g} | {a['row_cosine_mean']:.4f} "
            f"({a['row_cosine_min']:.4f}) | {100 * a['same_prompt_tokens']:.0f}% | "
            f"{100 * a['same_reply_tokens']:.0f}% |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON; return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    machine = describe_machine(args.threads)
    prompts = select_prompts(args.data_root, args.langs, args.prompts)
    started = time.perf_counter()
    results = [benchmark_model(name, prompts, args) for name in args.models]
    machine["load_average_end"] = list(os.getloadavg())
    report = {
        "command": shlex.join(["python", "benchmarks/vs_torch.py", *arguments]),
        "machine": machine,
        "settings": {
            "models": args.models, "prompts": args.prompts, "langs": args.langs,
            "threads": args.threads, "new_tokens": args.new_tokens, "repeats": args.repeats,
            "batch": args.batch,
            "statistic": "median over repeats; ratio = lrgate / torch",
        },
        "prompts": [{"lang": p.lang, "label": p.label} for p in prompts],
        "wall_seconds": time.perf_counter() - started,
        "results": results,
    }

    versions = machine["versions"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads; "
          f"load average {machine['load_average_start'][0]:.2f} at start, "
          f"{machine['load_average_end'][0]:.2f} at end")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{args.prompts} PolyRefuse test prompts ({' '.join(args.langs)}), {args.repeats} "
          f"rounds per stack, median reported; gated generation up to {args.new_tokens} tokens")
    print(format_tables(results))
    for result in results:
        met = result["targets_met"]
        low, high = result["load_average_during"]
        print(f"{result['model']}: gate {result['gate']}; load average {low:.2f}-{high:.2f} "
              f"during the rounds; targets (extract and generation >= {TARGET_SPEEDUP:g}x, "
              f"peak memory < {TARGET_MEMORY_RATIO:g}x): "
              + ", ".join(f"{k} {'met' if v else 'not met'}" for k, v in met.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("lrgate_cpp.llama_cpp").setLevel(logging.WARNING)
    sys.exit(main())
