"""The public API stays small: a change here is a deliberate decision."""

import pulsebeam
import pulsebeam.auth


def test_top_level_names_are_pinned() -> None:
    assert sorted(pulsebeam.__all__) == [
        "AccessToken",
        "KeyPair",
        "PeerClaims",
        "PeerPolicy",
        "TokenVerifier",
        "VerifiedToken",
        "__version__",
    ]
    for name in pulsebeam.__all__:
        assert getattr(pulsebeam, name) is not None


def test_auth_names_exist() -> None:
    for name in pulsebeam.auth.__all__:
        assert hasattr(pulsebeam.auth, name), name
