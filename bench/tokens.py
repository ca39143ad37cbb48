"""Verified tokens per second on one core, beside raw Ed25519 verification (the physical limit).

Run: .venv/bin/python bench/tokens.py [--count N]

Rows:
- raw Ed25519 verify: `cryptography` verifying a 64-byte signature over a token-sized message;
- fresh tokens: every token distinct (nothing cached), full parse + checks + signature;
- cached re-verification: the same tokens verified again (the common case: a peer's
  Prepare/Recv/Send calls all carry one token).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from pulsebeam import AccessToken, KeyPair, PeerClaims, PeerPolicy, TokenVerifier
from pulsebeam.auth import decode_unverified, parse_public_key


def rate(label: str, count: int, work: Callable[[], None], repeats: int = 5) -> tuple[str, float]:
    """Median rate over `repeats` runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        rates.append(count / (time.perf_counter() - start))
    return label, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    pair = KeyPair.generate()
    minter = AccessToken(pair.api_key, pair.api_secret)
    public = parse_public_key(pair.public_key)
    tokens = []
    for i in range(args.count):
        claims = PeerClaims("room1", f"peer-{i}")
        claims.set_allow_policy(PeerPolicy("room1", "*"))
        tokens.append(minter.create_token(claims, 3600))
    lookup = {pair.api_key: public}.get

    signing_inputs = [t.rsplit(".", 1)[0].encode() for t in tokens]
    signatures = [decode_unverified(t).signature for t in tokens]

    def raw() -> None:
        for message, signature in zip(signing_inputs, signatures, strict=True):
            public.verify(signature, message)

    def fresh() -> None:
        verifier = TokenVerifier(lookup, cache_size=0)
        for token in tokens:
            verifier.verify(token)

    warm = TokenVerifier(lookup, cache_size=args.count + 1)
    for token in tokens:
        warm.verify(token)

    def cached() -> None:
        for token in tokens:
            warm.verify(token)

    rows = [
        rate("raw Ed25519 verify (cryptography)", args.count, raw),
        rate("fresh tokens (TokenVerifier, no cache)", args.count, fresh),
        rate("cached re-verification (TokenVerifier)", args.count, cached),
    ]
    raw_rate = rows[0][1]
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, one core, "
        f"{args.count} tokens of {len(tokens[0])} bytes, median of 5 runs"
    )
    print("| what | verified/s | vs raw |")
    print("|---|---:|---:|")
    for label, value in rows:
        print(f"| {label} | {value:,.0f} | {value / raw_rate:.0%} |")


if __name__ == "__main__":
    main()
