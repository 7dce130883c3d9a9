"""Token format, scrypt hashing, and the cache of verified secrets."""

from __future__ import annotations

import re
import threading

import pytest

from modelloop.access._tokens import (
    FAILURE_WINDOW_S,
    MAX_FAILURES,
    TOKEN_PREFIX,
    VerifiedCache,
    hash_secret,
    new_token,
    parse_token,
    verify_secret,
)
from modelloop.exceptions import InvalidInput
from modelloop.serving._auth import MIN_TOKEN_LENGTH, load_tokens


def test_a_token_has_a_prefix_an_id_and_a_high_entropy_secret() -> None:
    seen = set()
    for _ in range(50):
        token_id, secret, plaintext = new_token()
        assert re.fullmatch(r"[0-9a-f]{16}", token_id)
        assert len(secret) == 43  # 32 random bytes, base64url
        assert plaintext == f"{TOKEN_PREFIX}{token_id}_{secret}"
        parsed = parse_token(plaintext)
        assert parsed is not None and (parsed.token_id, parsed.secret) == (token_id, secret)
        assert secret not in repr(parsed)
        seen.add(secret)
    assert len(seen) == 50
    # a user token is also a valid model-server token (RFC 6750 characters, long enough)
    assert load_tokens(tokens=[plaintext], environ={})[0].value == plaintext
    assert len(plaintext) >= MIN_TOKEN_LENGTH


@pytest.mark.parametrize(
    "text",
    ["", "mlt_", "mlt_0123456789abcdef", "mlt_0123456789ABCDEF_" + "a" * 43,
     "mlt_0123456789abcdef_" + "a" * 42, "mlt_0123456789abcdef_" + "a" * 44,
     "xyz_0123456789abcdef_" + "a" * 43, "mlt_0123456789abcdef_" + "a" * 42 + "!"],
)  # fmt: skip
def test_malformed_tokens_parse_to_none(text: str) -> None:
    assert parse_token(text) is None


def test_hash_and_verify() -> None:
    _, secret, _ = new_token()
    stored = hash_secret(secret)
    assert stored.startswith("scrypt$14$8$1$") and secret not in stored
    assert hash_secret(secret) != stored  # a fresh salt each time
    assert verify_secret(secret, stored)
    assert not verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), stored)
    for broken in ("", "scrypt$", "bcrypt$14$8$1$AAAA$AAAA", "scrypt$99$8$1$AAAA$AAAA",
                   stored.replace("$14$", "$x$")):  # fmt: skip
        assert not verify_secret(secret, broken)


def test_the_cache_knows_only_what_it_was_told() -> None:
    cache = VerifiedCache(max_entries=2)
    assert cache.check("a", "h1", "s") is None
    cache.add("a", "h1", "s")
    assert cache.check("a", "h1", "s") is True
    assert cache.check("a", "h1", "wrong") is False  # one secret per token
    assert cache.check("a", "h2", "s") is None  # another stored hash: verify again
    cache.add("b", "h", "s")
    cache.add("c", "h", "s")  # evicts "a", the least recently used
    assert cache.check("a", "h1", "s") is None and cache.check("c", "h", "s") is True
    cache.discard("c")
    assert cache.check("c", "h", "s") is None
    with pytest.raises(InvalidInput):
        VerifiedCache(0)


def test_the_cache_is_safe_under_threads() -> None:
    cache = VerifiedCache(max_entries=64)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                key = f"{n}-{i % 100}"
                cache.add(key, "h", key)
                assert cache.check(key, "h", "other") in (False, None)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache._entries) == 64


def test_wrong_secrets_for_an_unverified_id_stop_costing_scrypt() -> None:
    cache = VerifiedCache()
    t0 = 100.0
    for i in range(MAX_FAILURES):
        assert cache.may_verify("a", now=t0 + i * 0.1)
        cache.failed("a", now=t0 + i * 0.1)
    assert not cache.may_verify("a", now=t0 + 0.5)  # refused without scrypt
    assert cache.may_verify("b", now=t0 + 0.5)  # other ids are not affected
    assert cache.may_verify("a", now=t0 + FAILURE_WINDOW_S)  # a new window
    cache.failed("a", now=t0 + FAILURE_WINDOW_S)
    assert cache.may_verify("a", now=t0 + FAILURE_WINDOW_S + 0.1)  # one failure in it so far
    cache.add("a", "h", "s")  # verified: failures are forgotten
    assert cache._failures.get("a") is None
