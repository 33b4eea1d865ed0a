"""Chat prompts rendered with the model's own Jinja template.

llama.cpp's ``llama_chat_apply_template`` approximates well-known templates;
for Qwen2.5 it omits the default system prompt that the real template adds,
which changes both activations and refusals. This module renders the
template stored in the GGUF metadata, as transformers does.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from lrgate_cpp.model import Model

__all__ = ["ChatTemplate", "TemplateError", "encode_messages", "template_for"]

Message = dict[str, str]

# Used when a model ships no template (e.g. a base model): plain turns.
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class TemplateError(ValueError):
    """The chat template failed to render the conversation."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template rejected the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template.

    Args:
        source: Jinja source from ``tokenizer.chat_template``; None uses a
            plain "Role: text" layout.
        bos_token: text of the model's BOS token, passed to the template.
        eos_token: text of the model's EOS token.
    """

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or _FALLBACK_TEMPLATE
        self.is_fallback = source is None
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"the model's chat template does not parse: {error}") from error

    def render(self, messages: list[Message], add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """Render a conversation, ending with the assistant header when asked."""
        for i, message in enumerate(messages):
            if message.get("role") not in ("system", "user", "assistant"):
                raise TemplateError(f"message {i} has role {message.get('role')!r}; "
                                    "expected system, user or assistant")
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except jinja2.TemplateError as error:
            raise TemplateError(f"chat template failed to render: {error}") from error


def template_for(model: Model) -> ChatTemplate:
    """Return the chat template stored in a model's GGUF metadata."""
    return ChatTemplate(model.chat_template, model.special_token_text("bos"),
                        model.special_token_text("eos"))


def encode_messages(model: Model, template: ChatTemplate, messages: list[Message],
                    add_generation_prompt: bool = True) -> list[int]:
    """Render a conversation and tokenize it, special tokens included.

    The BOS token is prepended when the model asks for one and the template
    did not write it, so it appears exactly once.
    """
    tokens = model.tokenize(template.render(messages, add_generation_prompt))
    if model.add_bos and model.bos_token >= 0 and (not tokens or tokens[0] != model.bos_token):
        tokens.insert(0, model.bos_token)
    return tokens
