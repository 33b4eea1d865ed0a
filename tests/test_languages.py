import pytest

from lrgate_cpp.languages import (
    ALL_LANGUAGES,
    HIGH_RESOURCE,
    LANGUAGE_NAMES,
    LOW_RESOURCE,
    MID_RESOURCE,
    TIERS,
    check_language,
    language_name,
    tier_of,
)


def test_tiers_hold_expected_codes():
    assert HIGH_RESOURCE == ("en", "de", "fr", "es", "it", "nl", "pl", "ru", "zh", "ja")
    assert MID_RESOURCE == ("ar", "ko", "th", "el", "he", "hi", "fa")
    assert LOW_RESOURCE == ("sw", "am", "my", "km", "si", "yo")
    assert set(TIERS) == {"high", "mid", "low"}


def test_all_languages_unique_and_named():
    assert len(ALL_LANGUAGES) == 23
    assert len(set(ALL_LANGUAGES)) == 23
    assert set(LANGUAGE_NAMES) == set(ALL_LANGUAGES)


@pytest.mark.parametrize(
    ("code", "tier"), [("en", "high"), ("ja", "high"), ("ar", "mid"), ("fa", "mid"),
                       ("sw", "low"), ("yo", "low")]
)
def test_tier_of_known_codes(code, tier):
    assert tier_of(code) == tier


def test_tier_of_every_code_matches_tiers():
    for tier, codes in TIERS.items():
        for code in codes:
            assert tier_of(code) == tier


def test_language_name_examples():
    assert language_name("sw") == "Swahili"
    assert language_name("my") == "Burmese"
    assert language_name("fa") == "Persian"


def test_check_language_returns_code():
    assert check_language("km") == "km"


def test_check_language_unknown_lists_known():
    with pytest.raises(ValueError) as info:
        check_language("xx")
    message = str(info.value)
    assert "'xx'" in message
    assert "en" in message
    assert "sw" in message
    assert "yo" in message


def test_check_language_ignores_case_and_spaces():
    assert check_language("SW") == "sw"
    assert check_language(" En ") == "en"


@pytest.mark.parametrize("bad", ["", "vi", None, 3])
def test_check_language_rejects_other_values(bad):
    with pytest.raises(ValueError):
        check_language(bad)


def test_tier_of_unknown_raises():
    with pytest.raises(ValueError, match="'bn'"):
        tier_of("bn")
