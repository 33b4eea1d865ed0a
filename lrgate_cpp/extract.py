"""Residual-stream extraction: prompts in, activations on disk out.

An extraction run renders each prompt with the model's chat template,
prefills several prompts at once as separate sequences, and captures the
``l_out-N`` rows of the chosen layers through the native hook. Results go
to a directory that :class:`ActivationStore` reads:

- ``manifest.json``: format version, model fingerprint, layers, positions,
  n_embd, and one record per prompt (text, label, lang, source, split);
- ``acts_<position>.npy``: float32 of shape (n_prompts, n_layers, n_embd),
  a plain ``.npy`` file that ``np.load(mmap_mode="r")`` maps without
  copying (no pickle);
- ``done.npy``: bool of shape (n_prompts,), which prompts are written. A run
  interrupted at any point resumes from it.

Positions: ``t_post_inst`` is the last prompt token, after the assistant
header, and the gate reads it. ``t_inst`` is the last token of the user's
text, before the template's end-of-turn markup.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lrgate_cpp.data import Prompt
from lrgate_cpp.fingerprint import ModelFingerprint
from lrgate_cpp.hook import Rows
from lrgate_cpp.model import Model
from lrgate_cpp.runtime import Context
from lrgate_cpp.template import ChatTemplate, encode_messages, template_for

__all__ = [
    "POSITIONS",
    "ActivationStore",
    "check_layers",
    "extract_activations",
    "instruction_end_index",
    "pack_prompts",
]

log = logging.getLogger(__name__)

POSITIONS = ("t_post_inst", "t_inst")
FORMAT_VERSION = 1


def instruction_end_index(model: Model, template: ChatTemplate, text: str) -> int:
    """Return the index of the last token of the user's text in the rendered prompt."""
    rendered = template.render([{"role": "user", "content": text}])
    end = rendered.rfind(text)
    if end < 0:
        raise ValueError("the chat template changed the prompt text; t_inst cannot be located")
    prefix = model.tokenize(rendered[: end + len(text)])
    offset = 1 if model.add_bos and (not prefix or prefix[0] != model.bos_token) else 0
    return len(prefix) - 1 + offset


def check_layers(model: Model, layers: Sequence[int] | None) -> list[int]:
    """Return the sorted, distinct layers to read, all but the last block for None.

    The last block's ``l_out`` keeps only the rows that produce logits, so
    it is left out of "all layers" and rejected when asked for.
    """
    if layers is None:
        return list(range(model.n_layer - 1))
    layers = sorted(set(int(layer) for layer in layers))
    for layer in layers:
        if not 0 <= layer < model.n_layer - 1:
            raise ValueError(
                f"layer {layer} is outside 0..{model.n_layer - 2} for {model.name} "
                f"({model.n_layer} blocks; the last block cannot be read)")
    return layers


class ActivationStore:
    """An extraction directory opened for reading.

    Attributes:
        path: the directory.
        manifest: the parsed ``manifest.json``.
        prompts: the prompts, in row order.
        layers: the layers stored, in order.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(
                f"{manifest_path} not found; is {self.path} an output of `lrgate extract`?")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{manifest_path} is not valid JSON: {error}") from error
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path} has format version "
                             f"{self.manifest.get('format_version')}; expected {FORMAT_VERSION}")
        self.prompts = [Prompt(**record) for record in self.manifest["prompts"]]
        self.layers: list[int] = list(self.manifest["layers"])
        self.positions: list[str] = list(self.manifest["positions"])
        self.fingerprint = ModelFingerprint(**self.manifest["model"])

    @property
    def done(self) -> np.ndarray:
        return np.load(self.path / "done.npy", allow_pickle=False)

    def activations(self, position: str = "t_post_inst") -> np.ndarray:
        """Return the memory-mapped activations of one position, shape (n_prompts, n_layers, n_embd)."""
        if position not in self.positions:
            raise ValueError(f"position {position!r} was not extracted; stored: {self.positions}")
        return np.load(self.path / f"acts_{position}.npy", mmap_mode="r", allow_pickle=False)

    def features(self, layer: int, position: str = "t_post_inst",
                 langs: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Return one layer's rows of finished prompts, optionally of some languages.

        Returns:
            features float32 (n, n_embd), labels int8 (n,) with 1 for harmful,
            and the language code of each row.
        """
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not extracted; stored layers: {self.layers}")
        keep = self.done.copy()
        if langs is not None:
            wanted = set(langs)
            keep &= np.array([p.lang in wanted for p in self.prompts], dtype=bool)
        index = np.flatnonzero(keep)
        rows = np.asarray(self.activations(position)[index, self.layers.index(layer)],
                          dtype=np.float32)
        labels = np.array([self.prompts[i].label == "harmful" for i in index], dtype=np.int8)
        return rows, labels, [self.prompts[i].lang for i in index]


def _create_store(out: Path, model: Model, prompts: Sequence[Prompt], layers: list[int],
                  positions: Sequence[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": asdict(model.fingerprint()),
        "model_path": str(model.path),
        "layers": layers,
        "positions": list(positions),
        "n_embd": model.n_embd,
        "prompts": [asdict(p) for p in prompts],
    }
    for position in positions:
        np.lib.format.open_memmap(out / f"acts_{position}.npy", mode="w+", dtype=np.float32,
                                  shape=(len(prompts), len(layers), model.n_embd)).flush()
    np.save(out / "done.npy", np.zeros(len(prompts), dtype=bool))
    # The manifest is written last: its presence marks a complete layout.
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1),
                                       encoding="utf-8")


def _open_for_resume(out: Path, model: Model, prompts: Sequence[Prompt], layers: list[int],
                     positions: Sequence[str]) -> ActivationStore:
    store = ActivationStore(out)
    expected = [asdict(p) for p in prompts]
    if (store.manifest["prompts"] != expected or store.layers != layers
            or store.positions != list(positions)):
        raise ValueError(
            f"{out} contains an extraction of other prompts, layers or positions; choose a new "
            "--out directory, or pass --overwrite to start again")
    if not store.fingerprint.matches(model.fingerprint()):
        raise ValueError(f"{out} was extracted from {store.fingerprint.describe()}, not "
                         f"{model.fingerprint().describe()}; choose a new --out directory")
    return store


def extract_activations(
    model: Model,
    prompts: Sequence[Prompt],
    out: str | Path,
    layers: Sequence[int] | None = None,
    positions: Sequence[str] = ("t_post_inst",),
    batch_prompts: int = 8,
    n_threads: int | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ActivationStore:
    """Run prompts through the model and store their activations.

    Args:
        model: the loaded model.
        prompts: prompts to run, in the order rows are stored.
        out: output directory; an existing one for the same prompts resumes.
        layers: block indices; default every block but the last.
        positions: token positions to store, from :data:`POSITIONS`.
        batch_prompts: prompts prefilled together as separate sequences (default 8).
        n_threads: CPU threads; default all cores.
        overwrite: discard an existing extraction in ``out``.
        on_progress: called with the number of prompts finished in each batch.
    """
    if not prompts:
        raise ValueError("no prompts to extract")
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown or not positions:
        raise ValueError(f"unknown positions {unknown}; choose from {', '.join(POSITIONS)}")
    if batch_prompts < 1:
        raise ValueError(f"batch_prompts must be >= 1; got {batch_prompts}")
    layers = check_layers(model, layers)
    out = Path(out)
    if overwrite or not (out / "manifest.json").exists():
        _create_store(out, model, prompts, layers, positions)
    store = _open_for_resume(out, model, prompts, layers, positions)

    template = template_for(model)
    encoded = [encode_messages(model, template, [{"role": "user", "content": p.text}])
               for p in prompts]
    inst_index = ([instruction_end_index(model, template, p.text) for p in prompts]
                  if "t_inst" in positions else None)
    longest = max(len(tokens) for tokens in encoded)
    n_batch = max(longest, min(4096, sum(sorted(len(t) for t in encoded)[-batch_prompts:])))
    n_ctx = max(n_batch, 256)
    done = store.done
    todo = [i for i in range(len(prompts)) if not done[i]]
    if len(todo) < len(prompts):
        log.info("resuming %s: %d of %d prompts already done", out, len(prompts) - len(todo),
                 len(prompts))

    acts = {pos: np.load(out / f"acts_{pos}.npy", mmap_mode="r+") for pos in positions}
    rows = Rows.PROMPT if "t_inst" in positions else Rows.LAST_PROMPT
    with Context(model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=batch_prompts,
                 n_threads=n_threads) as ctx:
        assert ctx.hook is not None
        captures = [ctx.hook.capture(f"l_out-{layer}", rows=rows, capacity=n_batch)
                    for layer in layers]
        for group in pack_prompts(todo, encoded, batch_prompts, n_batch):
            ctx.clear()
            for capture in captures:
                capture.reset()
            ctx.prefill_until({seq: encoded[i] for seq, i in enumerate(group)},
                              f"l_out-{max(layers)}")
            for column, capture in enumerate(captures):
                data, seqs, flags = capture.read()
                for seq, i in enumerate(group):
                    mine = data[seqs == seq]
                    last = (flags[seqs == seq] & Rows.LAST_PROMPT) != 0
                    if "t_post_inst" in acts:
                        acts["t_post_inst"][i, column] = mine[last][-1]
                    if inst_index is not None:
                        acts["t_inst"][i, column] = mine[inst_index[i]]
            for array in acts.values():
                array.flush()
            done[group] = True
            _save_atomically(out / "done.npy", done)
            if on_progress is not None:
                on_progress(len(group))
    return ActivationStore(out)


def _save_atomically(path: Path, array: np.ndarray) -> None:
    partial = path.with_suffix(".partial.npy")
    np.save(partial, array)
    os.replace(partial, path)


def pack_prompts(todo: list[int], encoded: list[list[int]], batch_prompts: int,
          n_batch: int) -> list[list[int]]:
    """Group prompt indices into batches of at most ``batch_prompts`` and ``n_batch`` tokens."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in todo:
        size = len(encoded[i])
        if current and (len(current) == batch_prompts or tokens + size > n_batch):
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += size
    if current:
        groups.append(current)
    return groups
