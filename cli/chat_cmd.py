"""``lrgate chat``: talk to a model with the refusal gate on, or run one prompt."""

from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path

import click

from lrgate_cpp.bundle import (
    BundleError,
    GateBundle,
    ModelMismatchError,
    UncalibratedLanguageWarning,
)
from lrgate_cpp.cli.common import model_option, threads_option
from lrgate_cpp.gated import ChatReply, GatedModel
from lrgate_cpp.languages import LANGUAGE_NAMES
from lrgate_cpp.model import ModelError
from lrgate_cpp.runtime import ContextFullError, Sampling
from lrgate_cpp.shipped import BundleNotFoundError, shipped_bundle_files
from lrgate_cpp.template import Message

__all__ = ["chat"]

HELP_TEXT = """commands:
  /reset      start a new conversation
  /lang XX    switch the language (ISO 639-1) used for the gate's readout
  /gate       show the gate decision of the last reply
  /help       show this help
  /quit       exit (as Ctrl-D does)
Ctrl-C stops the current reply; Ctrl-D exits."""


@click.command()
@model_option
@click.option("--bundle", "bundle_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Gate bundle [default: the shipped bundle fitted on --model].")
@click.option("--lang", required=True, metavar="XX",
              help="Language of the conversation, an ISO 639-1 code such as sw.")
@click.option("--prompt", metavar="TEXT",
              help="Reply to TEXT once and exit [default: read stdin when it is not a terminal].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the reply and the gate decision as one JSON object.")
@click.option("--show-gate", is_flag=True,
              help="Print the gate decision after each reply: route, logit, threshold, and "
                   "the budget (examples per class the language was calibrated with; 0 means "
                   "the uncalibrated budget-0 threshold).")
@click.option("--no-gate", is_flag=True, help="Run the plain model: no row added or ablated.")
@click.option("--route", type=click.Choice(["harmful", "harmless"]), default=None,
              help="Force this route instead of the gate's decision.")
@click.option("--max-tokens", type=click.IntRange(1), default=512, show_default=True,
              metavar="N", help="Maximum tokens per reply.")
@click.option("--temperature", type=click.FloatRange(0), default=0.0, show_default=True,
              metavar="T", help="Sampling temperature; 0 samples greedily.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, metavar="P", help="Nucleus mass kept when T > 0.")
@click.option("--seed", type=int, default=0, show_default=True, metavar="S",
              help="Random seed for sampling when T > 0.")
@threads_option
@click.option("--n-ctx", type=click.IntRange(64), default=4096, show_default=True,
              metavar="N", help="Context window in tokens, shared by the whole conversation; "
              "llama.cpp rounds it up to a multiple of 256.")
def chat(model_spec: str, bundle_path: Path | None, lang: str, prompt: str | None,
         as_json: bool, show_gate: bool, no_gate: bool, route: str | None, max_tokens: int,
         temperature: float, top_p: float, seed: int, threads: int | None,
         n_ctx: int) -> None:
    """Chat with a model while the refusal gate routes each reply.

    With --prompt TEXT, or with text piped on stdin, the reply to that one
    prompt is printed and the command exits. Otherwise the chat is
    interactive: replies stream as they are generated, the conversation
    stays in the context, and /help lists the commands. Replies go to
    stdout; warnings and gate decisions go to stderr.
    """
    if no_gate and route is not None:
        raise click.UsageError("--no-gate and --route exclude each other; pass one of them")
    lang = lang.strip().lower()
    if lang not in LANGUAGE_NAMES:
        raise click.BadParameter(_unknown_language(lang, _calibrated_cheaply(bundle_path,
                                                                             model_spec)),
                                 param_hint="--lang")
    interactive = prompt is None and sys.stdin.isatty()
    if prompt is None and not interactive:
        prompt = sys.stdin.read()
    if prompt is not None and not prompt.strip():
        raise click.UsageError("the prompt is empty; pass text with --prompt or on stdin")

    gated = _load(model_spec, bundle_path, n_ctx, threads)
    session = ChatSession(gated, lang, max_tokens, Sampling(temperature, top_p, seed=seed),
                          route, not no_gate, show_gate)
    try:
        session.select_language(lang)
        if interactive:
            session.loop()
        else:
            assert prompt is not None
            session.run_once(prompt.strip(), as_json)
    finally:
        gated.close()


def _load(model_spec: str, bundle_path: Path | None, n_ctx: int,
          threads: int | None) -> GatedModel:
    """Build the gated model, turning each failure into a message about the option at fault."""
    try:
        return GatedModel(model_spec, bundle_path, n_ctx=n_ctx, n_threads=threads)
    except BundleError as error:
        raise click.BadParameter(str(error), param_hint="--bundle") from error
    except ModelMismatchError as error:
        raise click.BadParameter(f"{error}, or pass that model with --model",
                                 param_hint="'--model' / '--bundle'") from error
    except BundleNotFoundError as error:
        raise click.ClickException(str(error)) from error
    except (FileNotFoundError, IsADirectoryError, ModelError) as error:
        hint = "--bundle" if bundle_path is not None and not bundle_path.exists() else "--model"
        raise click.BadParameter(str(error), param_hint=hint) from error


def _calibrated_cheaply(bundle_path: Path | None, model_spec: str) -> tuple[str, ...] | None:
    """Return the calibrated languages of the bundle to be used, when known without the model.

    That is the --bundle file, or the shipped bundle named after a short
    model name; None when neither can be read.
    """
    if bundle_path is not None:
        candidates = [bundle_path]
    else:
        candidates = [path for path in shipped_bundle_files() if path.stem == model_spec]
    if not candidates:
        return None
    try:
        bundle = GateBundle.load(candidates[0])
    except (BundleError, FileNotFoundError):
        return None
    return tuple(dict.fromkeys((*bundle.source_languages, *bundle.calibrations)))


def _unknown_language(lang: str, calibrated: tuple[str, ...] | None) -> str:
    if calibrated:
        return (f"unknown language code {lang!r}; the bundle is calibrated for: "
                f"{' '.join(calibrated)} (other supported codes use the budget-0 threshold: "
                f"{' '.join(code for code in LANGUAGE_NAMES if code not in calibrated)})")
    return f"unknown language code {lang!r}; supported codes: {' '.join(LANGUAGE_NAMES)}"


class ChatSession:
    """The state of one ``lrgate chat`` run: the conversation and its settings."""

    def __init__(self, gated: GatedModel, lang: str, max_tokens: int, sampling: Sampling,
                 route: str | None, gate: bool, show_gate: bool) -> None:
        self.gated = gated
        self.lang = lang
        self.max_tokens = max_tokens
        self.sampling = sampling
        self.route = route
        self.gate = gate
        self.show_gate = show_gate
        self.history: list[Message] = []
        self.last: ChatReply | None = None

    def select_language(self, lang: str) -> bool:
        """Switch to ``lang``; warn on stderr when it is uncalibrated. Return False if unknown."""
        lang = lang.strip().lower()
        if lang not in LANGUAGE_NAMES:
            click.echo(_unknown_language(lang, self.gated.calibrated_languages), err=True)
            return False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UncalibratedLanguageWarning)
            self.gated.language_gate(lang)
        for warning in caught:
            click.echo(f"warning: {warning.message}", err=True)
        self.lang = lang
        return True

    def run_once(self, prompt: str, as_json: bool) -> None:
        """Reply to one prompt: the text, or a JSON object, on stdout."""
        messages: list[Message] = [{"role": "user", "content": prompt}]
        try:
            if as_json:
                reply = self._chat(messages)
                click.echo(json.dumps(self._summary(reply), ensure_ascii=False))
            else:
                reply = self._stream(messages)
        except ContextFullError as error:
            raise click.ClickException(f"{error} (--n-ctx)") from error
        if self.show_gate:
            click.echo(self._gate_line(reply), err=True)

    def loop(self) -> None:
        """Read prompts and commands from the terminal until end of input."""
        # A shell that starts a job in the background without job control
        # makes it ignore SIGINT, and Python then keeps ignoring it. The
        # interactive chat needs Ctrl-C to stop a reply, so it restores it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        model = self.gated.model
        click.echo(f"lrgate chat: {model.name}, gate at {self.gated.node} of "
                   f"{self.gated.bundle_path or 'the given bundle'}; language {self.lang} "
                   f"({LANGUAGE_NAMES[self.lang]}). /help lists commands; Ctrl-D exits.",
                   err=True)
        while True:
            try:
                click.echo(">>> ", nl=False, err=True)
                line = input()
            except EOFError:
                click.echo("", err=True)
                return
            except KeyboardInterrupt:
                click.echo("", err=True)
                continue
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return
            if text.startswith("/"):
                self._command(text)
            else:
                self._turn(text)

    def _command(self, text: str) -> None:
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name == "/reset":
            self.history.clear()
            self.gated.reset()
            click.echo("conversation reset", err=True)
        elif name == "/lang" and argument:
            if self.select_language(argument):
                click.echo(f"language: {self.lang} ({LANGUAGE_NAMES[self.lang]})", err=True)
        elif name == "/lang":
            click.echo(f"usage: /lang XX; the language now is {self.lang} "
                       f"({LANGUAGE_NAMES[self.lang]})", err=True)
        elif name == "/gate":
            click.echo(self._gate_line(self.last) if self.last else "no reply yet", err=True)
        elif name == "/help":
            click.echo(HELP_TEXT, err=True)
        else:
            click.echo(f"unknown command {text!r}; /help lists the commands", err=True)

    def _turn(self, text: str) -> None:
        messages = [*self.history, {"role": "user", "content": text}]
        try:
            reply = self._stream(messages)
        except ContextFullError as error:
            click.echo(f"{error}; /reset starts a new conversation", err=True)
            return
        except KeyboardInterrupt:
            # Ctrl-C before the stream started: the turn is dropped.
            click.echo("[stopped]", err=True)
            return
        self.last = reply
        if reply.stop_reason == "interrupted":
            click.echo("[stopped]", err=True)
            if not reply.text:
                return
        self.history = [*messages, {"role": "assistant", "content": reply.text}]
        if self.show_gate:
            click.echo(self._gate_line(reply), err=True)

    def _chat(self, messages: list[Message]) -> ChatReply:
        return self.gated.chat(messages, self.lang, self.max_tokens, self.sampling,
                               self.route, self.gate)

    def _stream(self, messages: list[Message]) -> ChatReply:
        """Print a reply as it is generated; Ctrl-C ends it early with the text shown so far."""
        stream = self.gated.stream(messages, self.lang, self.max_tokens, self.sampling,
                                   self.route, self.gate)
        try:
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
        finally:
            sys.stdout.write("\n")
            sys.stdout.flush()
        return stream.reply

    def _summary(self, reply: ChatReply) -> dict[str, object]:
        decision = reply.decision
        return {
            "reply": reply.text,
            "route": decision.route.name.lower() if decision else None,
            "logit": decision.logit if decision else None,
            "threshold": reply.threshold,
            "probability": decision.probability if decision else None,
            "lang": reply.lang,
            "budget": reply.budget,
            "gate": reply.gate,
            "forced_route": reply.forced_route,
            "stop_reason": reply.stop_reason,
        }

    def _gate_line(self, reply: ChatReply) -> str:
        summary = self._summary(reply)
        if reply.decision is None:
            return f"gate: no decision (the prompt was not decoded); lang {reply.lang}"
        if not reply.gate:
            state = "off"
        elif reply.forced_route:
            state = f"forced {reply.forced_route}"
        else:
            state = "on"
        return (f"gate ({state}): route {summary['route']}, logit {reply.decision.logit:+.3f}, "
                f"threshold {reply.threshold:+.3f}, p {reply.decision.probability:.3f}, "
                f"lang {reply.lang}, budget {reply.budget}")
