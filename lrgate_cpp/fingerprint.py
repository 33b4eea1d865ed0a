"""The identity of a model, as recorded in gate bundles."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelFingerprint"]


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of the model a bundle was fitted on.

    ``name`` only labels messages. The other fields must match for a bundle
    to be used with a model.
    """

    architecture: str
    n_embd: int
    n_layer: int
    tokenizer: str
    name: str = ""

    def differences(self, other: ModelFingerprint) -> list[str]:
        """Return the names of the compared fields that differ from ``other``."""
        compared = ("architecture", "n_embd", "n_layer", "tokenizer")
        return [key for key in compared if getattr(self, key) != getattr(other, key)]

    def matches(self, other: ModelFingerprint) -> bool:
        return not self.differences(other)

    def describe(self) -> str:
        """Return a one-line description for messages."""
        return (
            f"{self.name or '(unnamed)'} [{self.architecture}, n_embd {self.n_embd}, "
            f"n_layer {self.n_layer}, tokenizer {self.tokenizer}]"
        )
