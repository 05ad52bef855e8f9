"""The signature scheme on its own: what ``sign`` writes, ``verify`` accepts with the secret only, for the exact
bytes only, within the tolerance only."""

from __future__ import annotations

import hashlib
import hmac

from services.events.signing import sign, verify

BODY = b'{"id":"evt_1","type":"purchase.completed"}'
SECRET = "whsec_test_secret"


def test_the_header_is_a_timestamp_and_an_hmac_sha256_over_the_timestamp_and_the_body() -> None:
    header = sign(BODY, SECRET, 1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_a_signature_verifies_with_its_secret_and_body_only() -> None:
    header = sign(BODY, SECRET, 1_700_000_000)
    assert verify(BODY, header, SECRET, 300, now=1_700_000_100)
    assert not verify(BODY, header, "whsec_another", 300, now=1_700_000_100)
    assert not verify(BODY + b" ", header, SECRET, 300, now=1_700_000_100)
    assert not verify(BODY.replace(b"evt_1", b"evt_2"), header, SECRET, 300, now=1_700_000_100)


def test_a_signature_outside_the_tolerance_or_malformed_is_refused() -> None:
    header = sign(BODY, SECRET, 1_700_000_000)
    assert not verify(BODY, header, SECRET, 300, now=1_700_000_301)
    assert not verify(BODY, header, SECRET, 300, now=1_699_999_699)
    assert not verify(BODY, None, SECRET)
    assert not verify(BODY, "", SECRET)
    assert not verify(BODY, "v1=abc", SECRET)
    assert not verify(BODY, "t=soon," + header.split(",")[1], SECRET, 300, now=1_700_000_000)


def test_any_of_several_signatures_may_match_during_a_rotation() -> None:
    old = sign(BODY, "whsec_old", 1_700_000_000).split(",")[1]
    header = f"{sign(BODY, SECRET, 1_700_000_000)},{old}"
    assert verify(BODY, header, SECRET, 300, now=1_700_000_000)
    assert verify(BODY, header, "whsec_old", 300, now=1_700_000_000)
