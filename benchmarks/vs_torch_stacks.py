"""The two stacks that ``vs_torch.py`` compares, each run as a worker process.

A worker loads one model in one stack, then serves requests from the
driver, one JSON object per line. It reads ``warmup``, ``extract``,
``extract-stop``, ``generate`` or ``quit`` on stdin and writes one JSON
reply per request.
Each stack runs in its own process so that its peak resident memory
(``VmHWM``) is its own.

- ``lrgate``: llama.cpp through lrgate. Extraction reads with a
  ``LastPromptReader`` kept open across requests, which ends each forward
  pass after block L; gated generation runs ``Hook.gate`` on a context
  and ``Context.generate_all``.
- ``torch``: transformers on PyTorch, loading the same GGUF file
  dequantised to float32. Extraction puts a forward hook on decoder layer
  L; ``extract`` runs the whole forward pass, as hook-based research code
  usually does, and ``extract-stop`` raises in the hook to end the pass
  after block L, the same saving lrgate makes. Gated generation puts a forward hook on the same layer that computes
  the same readout on the last prompt row and adds or ablates as the
  native hook does, around ``model.generate``.

Inputs come from a job folder that the driver writes: ``prompts.json``
(texts) and ``gate.npz`` (layer, alpha, direction, basis and one readout
and threshold per prompt). Results that the driver compares go back to the
same folder: ``rows_<stack>.npy`` (float32, shape (n_prompts, n_embd)) and
``gate_<stack>.json`` (logits, routes, prompt and reply token ids).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("vs_torch_stacks")

STACKS = ("lrgate", "torch")
WARMUP_PROMPTS = 2
WARMUP_NEW_TOKENS = 4


def read_memory_kib() -> dict[str, int]:
    """Return this process's current (VmRSS) and peak (VmHWM) resident memory in KiB."""
    memory = {"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    memory[key.lower() + "_kib"] = int(value.split()[0])
    except OSError:
        pass  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS) is all there is
    return memory


class Job:
    """The inputs a worker reads from its job folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.texts: list[str] = json.loads((folder / "prompts.json").read_text("utf-8"))["texts"]
        with np.load(folder / "gate.npz", allow_pickle=False) as gate:
            self.layer = int(gate["layer"])
            self.alpha = float(gate["alpha"])
            self.direction = np.ascontiguousarray(gate["direction"], dtype=np.float32)
            self.basis_t = np.ascontiguousarray(gate["basis_t"], dtype=np.float32)
            # One readout per prompt, its language's, stacked: (n_prompts, rank).
            self.means = gate["means"].astype(np.float32)
            self.scales = gate["scales"].astype(np.float32)
            self.weights = gate["weights"].astype(np.float32)
            self.biases = gate["biases"].astype(np.float64)
            self.thresholds = gate["thresholds"].astype(np.float64)


# lrgate ---------------------------------------------------------------------


class LrgateStack:
    """lrgate over llama.cpp: native capture and native gate."""

    name = "lrgate"

    def __init__(self, model_path: Path, job: Job, threads: int, batch: int) -> None:
        from lrgate_cpp.hook import Readout
        from lrgate_cpp.model import Model
        from lrgate_cpp.runtime import Context
        from lrgate_cpp.template import template_for

        from lrgate_cpp.reader import LastPromptReader

        self.job = job
        self.threads = threads
        self.batch = batch
        self.model = Model(model_path)
        # Kept open across requests, as the torch stack keeps its model.
        self.reader = LastPromptReader(self.model, job.layer, batch_prompts=batch,
                                       n_threads=threads)
        self.template = template_for(self.model)
        self.context = Context(self.model, n_ctx=2048, n_batch=512, n_seq_max=1,
                               n_threads=threads)
        assert self.context.hook is not None
        self.hook = self.context.hook
        self.readouts = [
            Readout(job.basis_t, job.means[i], job.scales[i], job.weights[i],
                    float(job.biases[i]))
            for i in range(len(job.texts))
        ]
        self.hook.gate(f"l_out-{job.layer}", self.readouts[0], job.direction, job.alpha)
        # Counted once here, because last_prompt_rows tokenizes internally.
        self.prompt_lengths = [len(self.encode(text)) for text in job.texts]

    def encode(self, text: str) -> list[int]:
        from lrgate_cpp.template import encode_messages

        return encode_messages(self.model, self.template, [{"role": "user", "content": text}])

    def extract(self, count: int, stop: bool = True) -> tuple[np.ndarray, int]:
        """Return the last prompt rows of the first ``count`` prompts and their token total.

        The reader always ends each forward pass at the layer, so ``stop``
        changes nothing here.
        """
        rows = self.reader.read(self.job.texts[:count])
        return rows, sum(self.prompt_lengths[:count])

    def generate(self, index: int, new_tokens: int) -> dict[str, Any]:
        """Generate greedily for one prompt with the gate deciding; return tokens and decision."""
        tokens = self.encode(self.job.texts[index])
        self.context.clear()
        self.hook.configure_sequence(0, threshold=float(self.job.thresholds[index]),
                                     readout=self.readouts[index])
        reply = self.context.generate_all({0: tokens}, new_tokens)[0]
        decision = self.hook.decision(0)
        return {"prompt": tokens, "reply": reply, "logit": decision.logit,
                "route": decision.route.name.lower()}


# transformers on PyTorch ------------------------------------------------------


class StopForward(Exception):
    """Raised by the extraction hook to end a forward pass after the read layer."""


class TorchGate:
    """A forward hook on one decoder layer that reads, decides and steers like lrgate's gate.

    For each prompt, the first call of the layer is the prefill: the gate
    computes ``bias + weight . ((basis_t @ h - mean) / scale)`` in float64
    on the unedited last prompt row ``h``. A logit at or above the
    threshold routes the prompt as harmful, which adds ``alpha * v`` to the
    last prompt row and to every generated row. Otherwise every row loses
    its component along ``v``. Only batch size 1 is supported.
    """

    def __init__(self, layer_module: Any, job: Job) -> None:
        import torch

        self.torch = torch
        self.job = job
        self.basis_t = torch.from_numpy(job.basis_t.astype(np.float64))
        self.direction = torch.from_numpy(job.direction)
        self.layer_module = layer_module
        self.index = -1
        self.logit = float("nan")
        self.route: str | None = None
        self.handle: Any = None

    def attach(self, index: int) -> None:
        """Register the hook for prompt ``index``, whose readout and threshold it uses."""
        self.index = index
        self.route = None
        self.logit = float("nan")
        self.handle = self.layer_module.register_forward_hook(self._on_output)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def _on_output(self, module: Any, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[0] != 1:
            raise ValueError(f"the gate hook handles batch size 1; got {hidden.shape[0]}")
        if self.route is None:
            self.logit = self._readout_logit(hidden[0, -1])
            harmful = self.logit >= self.job.thresholds[self.index]
            self.route = "harmful" if harmful else "harmless"
        # The tensor is edited in place, so the returned object is unchanged.
        if self.route == "harmful":
            hidden[:, -1] += self.job.alpha * self.direction
        else:
            projection = hidden @ self.direction
            hidden -= projection.unsqueeze(-1) * self.direction
        return output

    def _readout_logit(self, row: Any) -> float:
        i = self.index
        z = (self.basis_t @ row.double()).numpy()
        standardized = (z - self.job.means[i]) / self.job.scales[i]
        return float(self.job.biases[i] + standardized @ self.job.weights[i].astype(np.float64))


class TorchStack:
    """transformers on PyTorch, with the GGUF weights dequantised to float32."""

    name = "torch"

    def __init__(self, model_path: Path, job: Job, threads: int, batch: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.job = job
        self.batch = batch
        folder, file_name = str(model_path.parent), model_path.name
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name,
                                                          dtype=torch.float32)
        self.model.eval()
        self.layer = self.model.model.layers[job.layer]
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.gate: TorchGate | None = None

    def encode(self, text: str) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(token) for token in ids]

    def extract(self, count: int, stop: bool = False) -> tuple[np.ndarray, int]:
        """Return the last prompt rows of the first ``count`` prompts and their token total.

        Prompts run in batches sorted by length, left-padded, with position
        ids that skip the padding; the hook keeps the last column of the
        layer's output. With ``stop`` the hook then raises, which ends the
        forward pass there, so later layers do not run.
        """
        torch = self.torch
        encoded = [self.encode(text) for text in self.job.texts[:count]]
        order = sorted(range(count), key=lambda i: len(encoded[i]))
        rows = np.empty((count, self.model.config.hidden_size), dtype=np.float32)
        captured: list[Any] = []

        def keep_last(module: Any, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured.append(hidden[:, -1].float().clone())
            if stop:
                raise StopForward

        handle = self.layer.register_forward_hook(keep_last)
        try:
            with torch.inference_mode():
                for start in range(0, count, self.batch):
                    group = order[start:start + self.batch]
                    width = max(len(encoded[i]) for i in group)
                    ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
                    mask = torch.zeros((len(group), width), dtype=torch.long)
                    for row, i in enumerate(group):
                        ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                        mask[row, width - len(encoded[i]):] = 1
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    captured.clear()
                    try:
                        self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                   use_cache=False, logits_to_keep=1)
                    except StopForward:
                        pass
                    rows[group] = captured[0].numpy()
        finally:
            handle.remove()
        return rows, sum(len(tokens) for tokens in encoded)

    def generate(self, index: int, new_tokens: int) -> dict[str, Any]:
        """Generate greedily for one prompt with the gate deciding; return tokens and decision."""
        torch = self.torch
        if self.gate is None:
            self.gate = TorchGate(self.layer, self.job)
        tokens = self.encode(self.job.texts[index])
        ids = torch.tensor([tokens])
        self.gate.attach(index)
        try:
            with torch.inference_mode():
                output = self.model.generate(ids, attention_mask=torch.ones_like(ids),
                                             max_new_tokens=new_tokens, do_sample=False,
                                             pad_token_id=self.pad_id)
        finally:
            self.gate.remove()
        reply = [int(token) for token in output[0, len(tokens):]]
        # generate keeps the end-of-generation token; lrgate does not yield it.
        if reply and reply[-1] in self._eos_ids():
            reply = reply[:-1]
        return {"prompt": tokens, "reply": reply, "logit": self.gate.logit,
                "route": self.gate.route}

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, list) else {int(eos)}


# Request loop -----------------------------------------------------------------


def run_generation(stack: LrgateStack | TorchStack, count: int,
                   new_tokens: int) -> tuple[float, list[dict[str, Any]]]:
    """Generate for the first ``count`` prompts; return wall seconds and the per-prompt results."""
    started = time.perf_counter()
    results = [stack.generate(i, new_tokens) for i in range(count)]
    return time.perf_counter() - started, results


def serve(stack: LrgateStack | TorchStack, job: Job, new_tokens: int,
          reply: Callable[[dict[str, Any]], None]) -> None:
    """Serve requests from stdin until ``quit`` or end of input."""
    n_prompts = len(job.texts)
    for line in sys.stdin:
        request = line.strip()
        if request == "quit":
            break
        if request == "warmup":
            count = min(WARMUP_PROMPTS, n_prompts)
            stack.extract(count)
            run_generation(stack, 1, WARMUP_NEW_TOKENS)
            reply({"op": "warmup"})
        elif request in ("extract", "extract-stop"):
            started = time.perf_counter()
            rows, prompt_tokens = stack.extract(n_prompts, stop=request == "extract-stop")
            seconds = time.perf_counter() - started
            np.save(job.folder / f"rows_{stack.name}.npy", rows)
            reply({"op": request, "seconds": seconds, "prompts": n_prompts,
                   "prompt_tokens": prompt_tokens})
        elif request == "generate":
            seconds, results = run_generation(stack, n_prompts, new_tokens)
            (job.folder / f"gate_{stack.name}.json").write_text(json.dumps(results), "utf-8")
            reply({"op": "generate", "seconds": seconds, "prompts": n_prompts,
                   "new_tokens": sum(len(r["reply"]) for r in results)})
        else:
            reply({"op": "error", "message": f"unknown request {request!r}"})
    reply({"op": "quit", "memory": read_memory_kib()})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve one stack of the vs_torch benchmark.")
    parser.add_argument("--stack", choices=STACKS, required=True)
    parser.add_argument("--model", type=Path, required=True, metavar="GGUF")
    parser.add_argument("--job", type=Path, required=True, metavar="DIR")
    parser.add_argument("--threads", type=int, required=True, metavar="N")
    parser.add_argument("--batch", type=int, required=True, metavar="N")
    parser.add_argument("--new-tokens", type=int, required=True, metavar="N")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the stack, report readiness, then serve requests; return the exit status."""
    args = parse_args(argv)
    # Replies go to a private copy of stdout, and file descriptor 1 is
    # pointed at stderr, so that a library printing to stdout cannot
    # corrupt the reply stream.
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    def reply(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")

    job = Job(args.job)
    started = time.perf_counter()
    stack_class = LrgateStack if args.stack == "lrgate" else TorchStack
    stack = stack_class(args.model, job, args.threads, args.batch)
    reply({"op": "ready", "load_seconds": time.perf_counter() - started,
           "memory_after_load": read_memory_kib()})
    serve(stack, job, args.new_tokens, reply)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main())
