"""Languages the gate supports, grouped into resource tiers.

Codes are ISO 639-1. The gate's directions are estimated on the
high-resource tier, and the mid and low tiers are the languages it is
recalibrated for with a few examples.
"""

from __future__ import annotations

__all__ = [
    "ALL_LANGUAGES",
    "HIGH_RESOURCE",
    "LANGUAGE_NAMES",
    "LOW_RESOURCE",
    "MID_RESOURCE",
    "TIERS",
    "check_language",
    "language_name",
    "tier_of",
]

HIGH_RESOURCE: tuple[str, ...] = ("en", "de", "fr", "es", "it", "nl", "pl", "ru", "zh", "ja")
MID_RESOURCE: tuple[str, ...] = ("ar", "ko", "th", "el", "he", "hi", "fa")
LOW_RESOURCE: tuple[str, ...] = ("sw", "am", "my", "km", "si", "yo")

TIERS: dict[str, tuple[str, ...]] = {
    "high": HIGH_RESOURCE,
    "mid": MID_RESOURCE,
    "low": LOW_RESOURCE,
}

ALL_LANGUAGES: tuple[str, ...] = HIGH_RESOURCE + MID_RESOURCE + LOW_RESOURCE

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pl": "Polish",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ar": "Arabic",
    "ko": "Korean",
    "th": "Thai",
    "el": "Greek",
    "he": "Hebrew",
    "hi": "Hindi",
    "fa": "Persian",
    "sw": "Swahili",
    "am": "Amharic",
    "my": "Burmese",
    "km": "Khmer",
    "si": "Sinhala",
    "yo": "Yoruba",
}


def check_language(code: str) -> str:
    """Validate a language code and return it in lower case, without spaces.

    Raises:
        ValueError: if ``code`` is not one of ``ALL_LANGUAGES`` in any
            letter case. The message names the code and lists the
            supported ones.
    """
    if isinstance(code, str) and code.strip().lower() in LANGUAGE_NAMES:
        return code.strip().lower()
    raise ValueError(
        f"unknown language code {code!r}; supported codes: {' '.join(ALL_LANGUAGES)}"
    )


def tier_of(code: str) -> str:
    """Return the resource tier of a language: ``"high"``, ``"mid"`` or ``"low"``.

    Raises:
        ValueError: if ``code`` is not a supported language code.
    """
    code = check_language(code)
    for tier, codes in TIERS.items():
        if code in codes:
            return tier
    raise AssertionError(f"language {code!r} has a name but no tier")


def language_name(code: str) -> str:
    """Return the English name of a language, for example ``"Swahili"`` for ``"sw"``.

    Raises:
        ValueError: if ``code`` is not a supported language code.
    """
    return LANGUAGE_NAMES[check_language(code)]
