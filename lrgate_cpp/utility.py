"""Multiple-choice utility with and without the gate, scored from the answer logits.

Each question is rendered with the model's chat template as a user turn that
lists lettered options and ends with "Answer with the letter only.", so the
first token of the reply is the answer letter. After one prefill, the score
of each option is the log-sum-exp of the logits of the tokens that spell its
letter, with and without a leading space (``"A"`` and ``" A"``), and the
prediction is the option with the highest score. No text is generated.

A gated condition installs the gate on the context's hook, so the gate
decides the route at the last prompt token and applies it in the same
prefill, before the answer logits are computed.

Answers are appended to ``answers.jsonl`` in the output folder, so a run
that stops resumes by skipping every (condition, dataset, subject,
language, index) already written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrgate_cpp.bundle import GateBundle
from lrgate_cpp.evaluate import append_records, open_records
from lrgate_cpp.extract import pack_prompts
from lrgate_cpp.hook import Readout
from lrgate_cpp.methods import MethodSetup, TargetExamples, build_method
from lrgate_cpp.model import Model
from lrgate_cpp.runtime import Context
from lrgate_cpp.template import encode_messages, template_for
from lrgate_cpp.utility_data import Question

__all__ = [
    "INSTRUCTION",
    "UtilityJob",
    "bundle_gate",
    "format_question",
    "letter_token_ids",
    "run_utility",
    "score_letters",
]

log = logging.getLogger(__name__)

INSTRUCTION = "Answer with the letter only."
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class UtilityJob:
    """Questions and batching of a utility run.

    Attributes:
        questions: the questions, each with its language.
        batch: questions prefilled together as separate sequences (default 8).
        n_threads: CPU threads; None uses all cores.
    """

    questions: list[Question]
    batch: int = 8
    n_threads: int | None = None


def format_question(question: Question) -> str:
    """Write a question as the user's message: text, lettered options, instruction."""
    if len(question.options) > len(LETTERS):
        raise ValueError(f"a question has at most {len(LETTERS)} options; got "
                         f"{len(question.options)}")
    options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(question.options))
    if question.dataset == "sib200":
        stem = f"Which topic is this sentence about?\n\n{question.text}"
    else:
        stem = question.text
    return f"{stem}\n\n{options}\n\n{INSTRUCTION}"


def letter_token_ids(model: Model, n_options: int) -> list[list[int]]:
    """Return, per option letter, the ids of the single tokens that spell it.

    A letter is spelled ``"A"`` or ``" A"``; a spelling that the tokenizer
    splits into several tokens is left out.

    Raises:
        ValueError: a letter has no single-token spelling, so it cannot be
            scored from one position's logits.
    """
    ids = []
    for letter in LETTERS[:n_options]:
        variants: list[int] = []
        for text in (letter, " " + letter):
            tokens = model.tokenize(text, parse_special=False)
            if len(tokens) == 1 and tokens[0] not in variants:
                variants.append(tokens[0])
        if not variants:
            raise ValueError(f"{model.name} has no single token for the letter {letter!r} "
                             "(with or without a leading space); letter scoring needs one")
        ids.append(variants)
    return ids


def score_letters(logits: np.ndarray, letter_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Return each option's score: log-sum-exp of its letter tokens' logits.

    Args:
        logits: float32 of shape (n_vocab,), the logits of the first reply token.
        letter_ids: per option, the token ids of its letter.

    Returns:
        float64 of shape (n_options,); the prediction is its argmax.
    """
    values = np.asarray(logits, dtype=np.float64)
    scores = np.empty(len(letter_ids))
    for option, ids in enumerate(letter_ids):
        chosen = values[list(ids)]
        top = chosen.max()
        scores[option] = top + np.log(np.exp(chosen - top).sum())
    return scores


def bundle_gate(bundle: GateBundle, langs: Sequence[str]) -> MethodSetup:
    """Build the ``gate`` method with the bundle's stored per-language readouts.

    Languages the bundle has calibrated use their own readout and threshold;
    the others use the budget-0 readout.
    """
    setup = build_method("gate", 0, bundle, list(langs), TargetExamples())
    for lang in langs:
        gate = bundle.calibrations.get(lang)
        if gate is None:
            continue
        readout = Readout(basis_t=np.ascontiguousarray(bundle.basis_t, dtype=np.float32),
                          mean=gate.mean, scale=gate.scale, weight=gate.weight,
                          bias=float(gate.bias))
        setup.per_language[lang] = (readout, gate.threshold)
    return setup


def _key(record: dict) -> tuple[str, str, str, str, int]:
    return (record["condition"], record["dataset"], record["subject"], record["lang"],
            int(record["index"]))


def run_utility(model: Model, conditions: Mapping[str, MethodSetup], job: UtilityJob,
                out: Path, on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Answer every question under every condition not yet in ``out/answers.jsonl``.

    Args:
        model: the loaded model.
        conditions: condition name (e.g. ``"none"``, ``"gate"``) -> method.
        job: questions and batching.
        out: run folder; created if missing.
        on_progress: called with the number of questions answered per batch.

    Returns:
        all answer records of the run folder, old and new.
    """
    if not job.questions:
        raise ValueError("no questions to answer")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "answers.jsonl"
    records = open_records(path)
    done = {_key(r) for r in records}
    template = template_for(model)
    encoded = [encode_messages(model, template, [{"role": "user", "content": format_question(q)}])
               for q in job.questions]
    letters = letter_token_ids(model, max(len(q.options) for q in job.questions))
    n_batch = max(1024, max(len(tokens) for tokens in encoded))

    with Context(model, n_ctx=n_batch, n_batch=n_batch, n_seq_max=job.batch,
                 n_threads=job.n_threads) as ctx, path.open("a", encoding="utf-8") as sink:
        assert ctx.hook is not None
        for condition, method in conditions.items():
            todo = [i for i, q in enumerate(job.questions)
                    if (condition, q.dataset, q.subject, q.lang, q.index) not in done]
            if not todo:
                continue
            method.install(ctx.hook)
            # One decode per group matters: a gate's harmless route ablates
            # only the rows of the decode in which it decides.
            for group in pack_prompts(todo, encoded, job.batch, n_batch):
                new = _answer_group(ctx, method, condition, job.questions, group, encoded,
                                    letters)
                append_records(sink, new)
                records.extend(new)
                if on_progress is not None:
                    on_progress(len(group))
    return records


def _answer_group(ctx: Context, method: MethodSetup, condition: str,
                  questions: list[Question], group: list[int], encoded: list[list[int]],
                  letters: list[list[int]]) -> list[dict]:
    ctx.clear()
    assert ctx.hook is not None
    for seq, i in enumerate(group):
        method.configure(ctx.hook, seq, questions[i].lang)
    ctx.prefill({seq: encoded[i] for seq, i in enumerate(group)})
    records = []
    for seq, i in enumerate(group):
        question = questions[i]
        scores = score_letters(ctx.logits(seq), letters[:len(question.options)])
        predicted = int(np.argmax(scores))
        route, logit = method.route_of(ctx.hook, seq)
        records.append({
            "condition": condition, "dataset": question.dataset, "subject": question.subject,
            "lang": question.lang, "index": question.index, "answer": question.answer,
            "predicted": predicted, "correct": predicted == question.answer,
            "route": route, "logit": logit,
            "scores": [round(float(s), 4) for s in scores],
        })
    return records
