"""Policy patterns: validation rules and a matcher checked against an independent regex oracle."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsebeam import PeerPolicy
from pulsebeam.auth import pattern_matches, validate_id, validate_pattern
from pulsebeam.errors import InvalidPatternError

ALPHABET = "abcAB09_-"
ids = st.text(alphabet=ALPHABET, min_size=1, max_size=36)
literals = st.text(alphabet=ALPHABET, min_size=0, max_size=12)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    prefix, suffix = draw(literals), draw(literals)
    if draw(st.booleans()):
        return prefix + "*" + suffix
    return draw(ids)


def oracle(pattern: str, value: str) -> bool:
    return (
        re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None
    )


@given(patterns(), ids)
def test_matcher_agrees_with_regex_oracle(pattern: str, value: str) -> None:
    validate_pattern(pattern, "p")
    assert pattern_matches(pattern, value) == oracle(pattern, value)


@given(ids)
def test_star_matches_every_id_and_exact_matches_itself(value: str) -> None:
    assert pattern_matches("*", value)
    assert pattern_matches(value, value)
    assert pattern_matches(value[:3] + "*", value)
    assert pattern_matches("*" + value[-3:], value)


@given(literals, literals, ids)
def test_prefix_and_suffix_may_not_share_characters(prefix: str, suffix: str, middle: str) -> None:
    assert pattern_matches(prefix + "*" + suffix, prefix + middle + suffix)
    for cut in range(1, len(prefix + suffix) + 1):
        assert not pattern_matches(prefix + "*" + suffix, (prefix + suffix)[:-cut])


@pytest.mark.parametrize(
    ("pattern", "value"), [("ab*ba", "aba"), ("a*a", "a"), ("dev*", "de"), ("*bob", "ob")]
)
def test_overlapping_prefix_and_suffix_do_not_match(pattern: str, value: str) -> None:
    assert not pattern_matches(pattern, value)


def test_policy_allows_by_both_patterns() -> None:
    policy = PeerPolicy("room*", "*bot")
    assert policy.allows("room1", "chatbot")
    assert not policy.allows("lobby", "chatbot")
    assert not policy.allows("room1", "alice")
    assert str(policy) == "room*:*bot"
    assert PeerPolicy.parse("room*:*bot") == policy


@pytest.mark.parametrize("bad", ["", "**", "a*b*c", "a b", "é*", "x" * 37, "a:b", "*" + "x" * 37])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPatternError, match="is invalid"):
        validate_pattern(bad, "pattern")


@pytest.mark.parametrize("good", ["*", "a", "dev*", "*bob", "a*z", "x" * 36, "x" * 36 + "*"])
def test_good_patterns_are_accepted(good: str) -> None:
    assert validate_pattern(good, "pattern") == good


@pytest.mark.parametrize("bad", ["", "a*", "x" * 37, "a.b", 7, None])
def test_bad_ids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidPatternError):
        validate_id(bad, "peer_id")
