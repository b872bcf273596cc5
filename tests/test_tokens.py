"""Signed tokens: short, URL-safe, and a changed token is always rejected."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.tokens import SECRET_ENV, TokenError, load_secret, make_token, read_token

SECRET = b"0123456789abcdef0123456789abcdef"
ISSUED = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
SHAPE = re.compile(r"^v2\.[0-9a-f]+\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{20}$")  # version 2
# Minted by the code before itsdangerous (version 1), with SECRET at ISSUED: links in mail already sent.
V1_TOKENS = {
    ("unsubscribe", 1): "1.6ae9e8e0.qAL9MO3OU9dWvL4_gv0Y4w",
    ("unsubscribe", 1234): "4d2.6ae9e8e0.pOmreJn3Or1ZJk6pkOIzGA",
    ("unsubscribe", 2**32 - 1): "ffffffff.6ae9e8e0.ASp_AoWmqMbS_CMXHk8vqA",
    ("confirm", 42): "2a.6ae9e8e0.DldfGIw6W-rHkpmztJ3iAw",
}
ALPHABET = "0123456789abcdefABCDEFghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ-_."


@pytest.mark.parametrize("subscriber_id", [0, 1, 42, 2**31 - 1, 2**32 - 1])
@pytest.mark.parametrize("purpose", ["unsubscribe", "confirm"])
def test_round_trip_and_shape(purpose: str, subscriber_id: int) -> None:
    token = make_token(purpose, subscriber_id, SECRET, ISSUED)
    assert len(token) <= 40
    assert SHAPE.match(token) and "=" not in token
    assert read_token(purpose, token, SECRET, now=ISSUED + timedelta(days=1)) == subscriber_id


def test_every_single_character_change_is_rejected() -> None:
    token = make_token("unsubscribe", 1234, SECRET, ISSUED)
    for position, original in enumerate(token):
        for replacement in ALPHABET:
            if replacement == original:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(TokenError):
                read_token("unsubscribe", changed, SECRET, now=ISSUED)


def test_another_subscribers_id_with_a_valid_mac_shape_is_rejected() -> None:
    mine = make_token("unsubscribe", 7, SECRET, ISSUED)
    version, _id, issued, mac = mine.split(".")
    with pytest.raises(TokenError, match="signature"):
        read_token("unsubscribe", f"{version}.8.{issued}.{mac}", SECRET, now=ISSUED)
    old = V1_TOKENS[("unsubscribe", 1234)]
    with pytest.raises(TokenError, match="signature"):
        read_token("unsubscribe", "4d3" + old[3:], SECRET, now=ISSUED)


def test_non_canonical_spelling_is_rejected() -> None:
    token = make_token("unsubscribe", 10, SECRET, ISSUED)
    for spelling in ("0" + token, token.replace("v2.a.", "v2.0a."), token.replace("v2.a.", "v2.A."), token[3:]):
        with pytest.raises(TokenError):
            read_token("unsubscribe", spelling, SECRET, now=ISSUED)
    old = V1_TOKENS[("unsubscribe", 1234)]
    for spelling in ("0" + old, old.upper(), "v2." + old):
        with pytest.raises(TokenError):
            read_token("unsubscribe", spelling, SECRET, now=ISSUED)


def test_purpose_and_secret_are_bound() -> None:
    token = make_token("unsubscribe", 5, SECRET, ISSUED)
    with pytest.raises(TokenError):
        read_token("confirm", token, SECRET, now=ISSUED)
    with pytest.raises(TokenError):
        read_token("unsubscribe", token, b"another-secret-another-secret-xx", now=ISSUED)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "1.2.", "..", "x.y.z", "1.2.3.4", "é.1.abc", "1." * 40])
def test_garbage_is_rejected_with_token_error(garbage: str) -> None:
    with pytest.raises(TokenError):
        read_token("unsubscribe", garbage, SECRET, now=ISSUED)


def test_token_error_is_a_pipeline_error_with_one_line() -> None:
    with pytest.raises(PipelineError) as info:
        read_token("unsubscribe", "nonsense", SECRET)
    assert "\n" not in str(info.value)


def test_confirm_expires_after_seven_days_unsubscribe_never() -> None:
    confirm = make_token("confirm", 3, SECRET, ISSUED)
    assert read_token("confirm", confirm, SECRET, now=ISSUED + timedelta(days=6, hours=23)) == 3
    with pytest.raises(TokenError, match="expired"):
        read_token("confirm", confirm, SECRET, now=ISSUED + timedelta(days=7, minutes=1))
    unsubscribe = make_token("unsubscribe", 3, SECRET, ISSUED)
    assert read_token("unsubscribe", unsubscribe, SECRET, now=ISSUED + timedelta(days=3650)) == 3
    with pytest.raises(TokenError, match="expired"):
        read_token("unsubscribe", unsubscribe, SECRET, max_age=timedelta(days=1), now=ISSUED + timedelta(days=2))


def test_a_manage_token_expires_after_90_days_and_passes_for_no_other_purpose() -> None:
    manage = make_token("manage", 3, SECRET, ISSUED)
    assert read_token("manage", manage, SECRET, now=ISSUED + timedelta(days=89)) == 3
    with pytest.raises(TokenError, match="expired"):
        read_token("manage", manage, SECRET, now=ISSUED + timedelta(days=90, minutes=1))
    for other in ("unsubscribe", "confirm"):
        with pytest.raises(TokenError, match="signature"):
            read_token(other, manage, SECRET, now=ISSUED)
        with pytest.raises(TokenError, match="signature"):
            read_token("manage", make_token(other, 3, SECRET, ISSUED), SECRET, now=ISSUED)


def test_token_from_the_future_is_rejected() -> None:
    token = make_token("confirm", 3, SECRET, ISSUED + timedelta(hours=1))
    with pytest.raises(TokenError, match="future"):
        read_token("confirm", token, SECRET, now=ISSUED)


def test_secret_from_the_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "x" * 40)
    assert load_secret(settings) == b"x" * 40
    assert not (settings.state_dir / "secret").exists()
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(PipelineError, match="too short"):
        load_secret(settings)


def test_secret_generated_once_private_and_reused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    first = load_secret(settings)
    path: Path = settings.state_dir / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_secret(settings) == first
    assert [p.name for p in settings.state_dir.iterdir()] == ["secret"]  # no temporary left behind


def test_secret_readable_by_others_is_refused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    load_secret(settings)
    os.chmod(settings.state_dir / "secret", 0o644)
    with pytest.raises(PipelineError, match="chmod 600"):
        load_secret(settings)


@pytest.mark.parametrize(("key", "token"), sorted(V1_TOKENS.items()))
def test_tokens_in_mail_already_sent_keep_working(key: tuple[str, int], token: str) -> None:
    """Version 1 tokens, minted by the code before the one signer, still verify (and only for their purpose)."""
    purpose, subscriber_id = key
    assert read_token(purpose, token, SECRET, now=ISSUED + timedelta(days=1)) == subscriber_id
    other = "confirm" if purpose == "unsubscribe" else "unsubscribe"
    with pytest.raises(TokenError):
        read_token(other, token, SECRET, now=ISSUED)
    with pytest.raises(TokenError):
        read_token(purpose, token, b"another-secret-another-secret-xx", now=ISSUED)
    if purpose == "unsubscribe":
        assert read_token(purpose, token, SECRET, now=ISSUED + timedelta(days=3650)) == subscriber_id
    else:
        with pytest.raises(TokenError, match="expired"):
            read_token(purpose, token, SECRET, now=ISSUED + timedelta(days=8))


def test_every_single_character_change_of_a_version_1_token_is_rejected() -> None:
    token = V1_TOKENS[("unsubscribe", 1234)]
    for position, original in enumerate(token):
        for replacement in ALPHABET:
            if replacement != original:
                with pytest.raises(TokenError):
                    read_token(
                        "unsubscribe", token[:position] + replacement + token[position + 1 :], SECRET, now=ISSUED
                    )


def test_new_tokens_carry_their_issue_time_and_fit_a_header_line() -> None:
    from pipeline.ledger.tokens import token_issued_at

    token = make_token("unsubscribe", 2**32 - 1, SECRET, ISSUED)
    assert token_issued_at("unsubscribe", token, SECRET) == ISSUED
    assert token_issued_at("unsubscribe", V1_TOKENS[("unsubscribe", 1)], SECRET) == ISSUED
    # No longer than a version 1 token for the same id: List-Unsubscribe lines keep their length.
    assert len(token) <= len(V1_TOKENS[("unsubscribe", 2**32 - 1)]) == 40


def test_signed_values_expire_by_the_injected_clock() -> None:
    from pipeline.ledger.tokens import SignedValues

    now = [1_800_000_000.0]
    values = SignedValues(SECRET, "csrf", max_age=60, clock=lambda: now[0])
    token = values.sign("nonce")
    assert values.read(token) == "nonce"
    now[0] += 60
    assert values.read(token) == "nonce"
    now[0] += 1
    assert values.read(token) is None
    assert SignedValues(SECRET, "session", max_age=60, clock=lambda: now[0]).read(values.sign("x")) is None
    assert values.read(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert values.read(None) is None and values.read("") is None
