"""The evaluation runner: generate, judge, and summarize refusals per method.

Completions are appended to ``completions.jsonl`` in the output folder as
they are judged, one JSON object a line, so a run that stops resumes by
skipping every (method, language, label, prompt index) already written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import TextIO
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrgate_cpp.data import Prompt
from lrgate_cpp.reader import last_prompt_rows
from lrgate_cpp.methods import MethodSetup, TargetExamples
from lrgate_cpp.model import Model
from lrgate_cpp.runtime import Context, ContextFullError
from lrgate_cpp.template import encode_messages, template_for

__all__ = [
    "EvalJob",
    "RunSettingsError",
    "append_records",
    "check_run_settings",
    "collect_target_examples",
    "count_finished",
    "load_completions",
    "open_records",
    "run_eval",
]

log = logging.getLogger(__name__)

Judge = Callable[[Sequence[str]], list[bool]]


@dataclass(frozen=True)
class EvalJob:
    """An evaluation request: prompts and decoding settings.

    Attributes:
        prompts: test prompts; each carries its language and label.
        max_new_tokens: reply length limit in tokens (greedy decoding).
        batch: prompts decoded together as separate sequences.
        n_threads: CPU threads; None uses all cores.
    """

    prompts: list[Prompt]
    max_new_tokens: int = 48
    batch: int = 8
    n_threads: int | None = None


def _key(record: dict) -> tuple[str, str, str, int]:
    return (record["method"], record["lang"], record["label"], int(record["index"]))


class RunSettingsError(ValueError):
    """Error for a run folder that contains replies made with other settings."""


def check_run_settings(out: Path, settings: dict[str, object], record: bool = True) -> None:
    """Check the settings replies depend on against ``out/run.json``, or record them there.

    Methods, languages and sample sizes may grow between runs into one
    folder, because each reply is keyed by them. The model, the gate, the
    split and the reply length may not: replies made under different ones
    would be mixed in one summary. ``record=False`` only checks, so a
    command can fail early without leaving a folder behind.

    Raises:
        RunSettingsError: naming each setting that differs.
    """
    path = out / "run.json"
    if not path.exists():
        if not record:
            return
        if (out / "completions.jsonl").exists():
            log.warning("%s has replies but no run.json (made by an older lrgate); its "
                        "settings cannot be checked and are recorded from this command", out)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunSettingsError(f"{path} is not valid JSON ({error}); restore or delete it") from None
    differing = [f"{key}: folder has {recorded.get(key)!r}, this command {value!r}"
                 for key, value in settings.items() if recorded.get(key) != value]
    if differing:
        raise RunSettingsError(
            f"{out} contains replies made with other settings ({'; '.join(differing)}); "
            "use another --out folder, or repeat the settings of the run that made it")


def count_finished(records: Sequence[dict], labels: Sequence[str],
                   prompts: Sequence[Prompt]) -> int:
    """Count the (method label, prompt) pairs of a request that ``records`` already hold."""
    requested = {(label, p.lang, p.label, i) for label in labels
                 for p, i in zip(prompts, _cell_indices(prompts))}
    return len(requested & {_key(r) for r in records})


def load_completions(path: Path) -> list[dict]:
    """Read a completions file, skipping a last line cut off by an interruption."""
    return _read_records(path)[0]


def open_records(path: Path) -> list[dict]:
    """Read a JSONL records file that new records will be appended to.

    An interruption can leave the last line cut off or without its line
    break; the file is then rewritten from the complete records, so that
    the next record starts on a line of its own.
    """
    records, clean = _read_records(path)
    if not clean:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                        encoding="utf-8")
    return records


def append_records(sink: TextIO, records: Sequence[dict]) -> None:
    """Write records to an open JSONL file, one per line, and flush them to disk."""
    for record in records:
        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sink.flush()


def _read_records(path: Path) -> tuple[list[dict], bool]:
    """Return the records of a JSONL file and whether its text ends cleanly after them."""
    if not path.exists():
        return [], True
    text = path.read_text(encoding="utf-8")
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                log.warning("%s: ignoring an incomplete last line", path)
                return records, False
            raise ValueError(f"{path}: line {number} is not valid JSON; fix or delete the file")
    return records, text == "" or text.endswith("\n")


def collect_target_examples(model: Model, layer: int, examples: dict[str, list[Prompt]],
                            n_threads: int | None = None) -> TargetExamples:
    """Run the calibration examples of each language and keep their rows."""
    target = TargetExamples()
    for lang, prompts in examples.items():
        if not prompts:
            continue
        target.rows[lang] = last_prompt_rows(model, [p.text for p in prompts], layer,
                                             n_threads=n_threads)
        target.labels[lang] = np.array([p.label == "harmful" for p in prompts], dtype=np.int8)
    return target


def run_eval(model: Model, methods: Sequence[MethodSetup], job: EvalJob, out: Path,
             judge: Judge, on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Generate and judge replies for every method and prompt not yet in ``out``.

    Returns:
        all completion records of the run folder, old and new.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "completions.jsonl"
    records = open_records(path)
    done = {_key(r) for r in records}
    template = template_for(model)
    encoded = [encode_messages(model, template, [{"role": "user", "content": p.text}])
               for p in job.prompts]
    index_in_cell = _cell_indices(job.prompts)
    n_batch = max(512, max(len(t) for t in encoded) * 2)
    n_ctx = max(1024, job.batch * (max(len(t) for t in encoded) + job.max_new_tokens) + 64)

    with Context(model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=job.batch,
                 n_threads=job.n_threads) as ctx, path.open("a", encoding="utf-8") as sink:
        assert ctx.hook is not None
        for method in methods:
            todo = [i for i, p in enumerate(job.prompts)
                    if (method.label, p.lang, p.label, index_in_cell[i]) not in done]
            if not todo:
                continue
            method.install(ctx.hook)
            for start in range(0, len(todo), job.batch):
                group = todo[start:start + job.batch]
                new = _run_group(ctx, model, method, job, group, encoded, index_in_cell, judge)
                append_records(sink, new)
                records.extend(new)
                if on_progress is not None:
                    on_progress(len(group))
    return records


def _cell_indices(prompts: Sequence[Prompt]) -> list[int]:
    """Number each prompt within its (language, label) cell, in order."""
    counters: dict[tuple[str, str], int] = {}
    indices = []
    for prompt in prompts:
        cell = (prompt.lang, prompt.label)
        indices.append(counters.get(cell, 0))
        counters[cell] = indices[-1] + 1
    return indices


def _run_group(ctx: Context, model: Model, method: MethodSetup, job: EvalJob,
               group: list[int], encoded: list[list[int]], index_in_cell: list[int],
               judge: Judge) -> list[dict]:
    ctx.clear()
    assert ctx.hook is not None
    for seq, i in enumerate(group):
        method.configure(ctx.hook, seq, job.prompts[i].lang)
    try:
        tokens = ctx.generate_all({seq: encoded[i] for seq, i in enumerate(group)},
                                  job.max_new_tokens)
    except ContextFullError as error:
        raise ValueError(f"a batch of prompts does not fit the context: {error}") from error
    replies = [model.detokenize(tokens[seq]) for seq in range(len(group))]
    verdicts = judge(replies)
    records = []
    for seq, i in enumerate(group):
        prompt = job.prompts[i]
        route, logit = method.route_of(ctx.hook, seq)
        records.append({
            "method": method.label, "lang": prompt.lang, "label": prompt.label,
            "index": index_in_cell[i], "prompt": prompt.text, "reply": replies[seq],
            "refused": bool(verdicts[seq]), "route": route, "logit": logit,
        })
    return records
