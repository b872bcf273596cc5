"""Signed, short, URL-safe tokens: unsubscribe and confirm links, CSRF and session cookies.

One signer for all of them: itsdangerous's ``TimestampSigner``, keyed per purpose
(its salt), so a token for one purpose never passes for another. Its signature is
HMAC-SHA256 truncated to 120 bits (20 base64url characters, no padding bits), so a
subscriber token stays short enough for a ``List-Unsubscribe`` header line and plain
enough for an 8bit or quoted-printable body: only ``[0-9A-Za-z._-]``, at most 40
characters (issue 3).

Versions of the subscriber tokens:

- ``v2.<id hex>.<issued, itsdangerous timestamp>.<signature>``: made now.
- ``<id hex>.<issued, unix seconds hex>.<HMAC-SHA256 over purpose:body, 128 bits>``
  (version 1): in every e-mail sent before, and still read, for ever for unsubscribe
  links (RFC 8058 and the law expect an old link to keep working).

The secret comes from ``PIPELINE_SECRET`` or, failing that, a random secret
generated once into ``<state>/secret`` (mode 0600).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, TimestampSigner
from itsdangerous.encoding import base64_encode, int_to_bytes
from itsdangerous.signer import SigningAlgorithm

from pipeline.config import Settings
from pipeline.errors import PipelineError

SECRET_ENV = "PIPELINE_SECRET"
SECRET_FILE = "secret"
PURPOSES = ("unsubscribe", "confirm")  # subscriber tokens; other purposes sign cookies
CONFIRM_MAX_AGE = timedelta(days=7)
_MAC_BYTES = 16  # version 1
_SIGNATURE_BYTES = 15  # version 2: 120 bits, 20 base64url characters with no spare bits
VERSION = "v2"
_MAX_LENGTH = 64
_CLOCK_SKEW = timedelta(minutes=5)
_MIN_SECRET_BYTES = 16


class TokenError(PipelineError):
    """A token that is malformed, forged, for another purpose, or expired."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="token", hint="use the link from the most recent e-mail")


def load_secret(settings: Settings) -> bytes:
    """The signing secret: ``PIPELINE_SECRET`` if set, else ``<state>/secret``, created once."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        secret = from_env.strip().encode("utf-8")
        if len(secret) < _MIN_SECRET_BYTES:
            raise PipelineError(
                f"{SECRET_ENV} is too short ({len(secret)} bytes)",
                field=SECRET_ENV,
                hint='use 32 or more random characters, e.g. python -c "import secrets; print(secrets.token_hex(32))"',
            )
        return secret
    return _secret_file(settings.state_dir / SECRET_FILE)


def _secret_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written under a private temporary name, then linked into place: a second
        # process starting at the same moment either wins the link or reads the
        # complete winner, never a half-written file.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PipelineError(
            f"the signing secret is readable by other users (mode {mode:o})",
            path=path,
            hint=f"run: chmod 600 {path}",
        )
    secret = path.read_text(encoding="ascii").strip().encode("ascii")
    if len(secret) < _MIN_SECRET_BYTES:
        raise PipelineError(
            "the signing secret file is empty or too short", path=path, hint="delete it to make a new one"
        )
    return secret


@functools.lru_cache(maxsize=32)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


class _TruncatedHmacSha256(SigningAlgorithm):
    """HMAC-SHA256 cut to ``_SIGNATURE_BYTES``. A copy of a keyed HMAC skips the key
    set-up; and unlike the one-shot hmac.digest, it never releases the GIL, which a
    send loop with many threads pays for dearly in waits to get it back."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        mac = _keyed(key).copy()
        mac.update(value)
        return mac.digest()[:_SIGNATURE_BYTES]


_ALGORITHM = _TruncatedHmacSha256()


@functools.lru_cache(maxsize=32)
def signer(secret: bytes, purpose: str) -> TimestampSigner:
    """The signer for ``purpose``: its salt, so purposes never mix."""
    return TimestampSigner(secret, salt=f"pipeline.{purpose}", digest_method=hashlib.sha256, algorithm=_ALGORITHM)


@functools.lru_cache(maxsize=256)
def _stamp(issued: int) -> str:
    # A campaign signs every recipient's token with its own creation time: encoded once.
    return base64_encode(int_to_bytes(issued)).decode("ascii")


def sign_at(secret: bytes, purpose: str, value: str, issued: int) -> str:
    """``value`` signed as issued at unix time ``issued``: the format of
    ``TimestampSigner.sign``, with the time given instead of read from the clock."""
    stamped = f"{value}.{_stamp(issued)}"
    return f"{stamped}.{signer(secret, purpose).get_signature(stamped).decode('ascii')}"


def unsign(secret: bytes, purpose: str, token: str, *, max_length: int = _MAX_LENGTH) -> tuple[str, int] | None:
    """(value, issued at) of an authentic token, or None. Age is the caller's to judge."""
    if not token or len(token) > max_length or not token.isascii():
        return None
    try:
        value, issued = signer(secret, purpose).unsign(token, return_timestamp=True)
    except (BadSignature, ValueError, OverflowError):
        return None
    return value.decode("ascii"), int(issued.timestamp())


class SignedValues:
    """Values signed with the time of signing, read back within ``max_age`` seconds of
    this object's clock (CSRF tokens, session cookies). The clock is injected."""

    def __init__(self, secret: bytes, purpose: str, max_age: float, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._purpose = purpose
        self.max_age = max_age
        self._clock = clock

    def sign(self, value: str) -> str:
        return sign_at(self._secret, self._purpose, value, int(self._clock()))

    def read(self, token: str | None) -> str | None:
        """The value of an authentic token that has not expired, else None."""
        found = unsign(self._secret, self._purpose, token or "", max_length=256)
        if found is None:
            return None
        value, issued = found
        age = self._clock() - issued
        return value if -_CLOCK_SKEW.total_seconds() <= age <= self.max_age else None


def _mac_v1(purpose: str, body: str, secret: bytes) -> str:
    mac = _keyed(secret).copy()
    mac.update(f"{purpose}:{body}".encode("ascii"))
    return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES]).rstrip(b"=").decode("ascii")


def make_token(purpose: str, subscriber_id: int, secret: bytes, issued_at: datetime | int | None = None) -> str:
    """A token binding ``subscriber_id`` to ``purpose`` at ``issued_at`` (default now)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    if subscriber_id < 0:
        raise ValueError("subscriber id must not be negative")
    if issued_at is None:
        issued = int(datetime.now(UTC).timestamp())
    elif isinstance(issued_at, datetime):
        issued = int(issued_at.timestamp())
    else:
        issued = issued_at
    return sign_at(secret, purpose, f"{VERSION}.{subscriber_id:x}", issued)


def _read_v2(purpose: str, token: str, secret: bytes) -> tuple[int, int]:
    found = unsign(secret, purpose, token)
    if found is None:
        raise TokenError("the link's signature does not match")
    value, issued = found
    id_hex = value.removeprefix(f"{VERSION}.")
    try:
        subscriber_id = int(id_hex, 16)
    except ValueError:
        raise TokenError("the link is incomplete or damaged") from None
    if value != f"{VERSION}.{subscriber_id:x}":  # one spelling per id ("0a" or "A" is another token)
        raise TokenError("the link is incomplete or damaged")
    return subscriber_id, issued


def _read_v1(purpose: str, token: str, secret: bytes) -> tuple[int, int]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("the link is incomplete or damaged")
    id_hex, issued_hex, _mac_text = parts
    try:
        subscriber_id = int(id_hex, 16)
        issued = int(issued_hex, 16)
    except ValueError:
        raise TokenError("the link is incomplete or damaged") from None
    body = f"{subscriber_id:x}.{issued:x}"
    # Compare the whole canonical token, so "0a" or "A" spellings of a valid id do not
    # pass as the same token, and compare in constant time.
    if not hmac.compare_digest(f"{body}.{_mac_v1(purpose, body, secret)}".encode(), token.encode("ascii", "replace")):
        raise TokenError("the link's signature does not match")
    return subscriber_id, issued


def _read(purpose: str, token: str, secret: bytes) -> tuple[int, int]:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    if not token or len(token) > _MAX_LENGTH or not token.isascii():
        raise TokenError("the link is incomplete or damaged")
    if token.startswith(f"{VERSION}."):
        return _read_v2(purpose, token, secret)
    return _read_v1(purpose, token, secret)  # the first part of a version 1 token is hex: never "v2"


def read_token(
    purpose: str,
    token: str,
    secret: bytes,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> int:
    """The subscriber id in a valid token (either version); ``TokenError`` otherwise.

    ``max_age`` defaults to none for unsubscribe (a link in an old e-mail must keep
    working, as RFC 8058 and the law expect) and to ``CONFIRM_MAX_AGE`` for confirm.
    """
    subscriber_id, issued = _read(purpose, token, secret)
    if max_age is None and purpose == "confirm":
        max_age = CONFIRM_MAX_AGE
    now = now or datetime.now(UTC)
    issued_at = datetime.fromtimestamp(issued, UTC)
    if issued_at > now + _CLOCK_SKEW:
        raise TokenError("the link was issued in the future")
    if max_age is not None and now - issued_at > max_age:
        raise TokenError("the link has expired")
    return subscriber_id


# --- the envelope sender's token (VERP) ----------------------------------------------

BOUNCE_PURPOSE = "bounce"


def make_bounce_token(campaign_id: int, subscriber_id: int, secret: bytes, issued_at: datetime | int) -> str:
    """The token in a delivery's envelope sender (``bounces+TOKEN@domain``): which
    campaign and subscriber a returned message is about, even when the bounce quotes
    nothing of the message. Signed like the other tokens, with a purpose of its own, so
    nobody can forge a bounce for an address they do not own; and only characters a
    mailbox's local part may hold (RFC 5321 dot-atom)."""
    if campaign_id < 0 or subscriber_id < 0:
        raise ValueError("ids must not be negative")
    issued = int(issued_at.timestamp()) if isinstance(issued_at, datetime) else issued_at
    return sign_at(secret, BOUNCE_PURPOSE, f"{campaign_id:x}-{subscriber_id:x}", issued)


def read_bounce_token(token: str, secret: bytes) -> tuple[int, int] | None:
    """(campaign id, subscriber id) of an authentic bounce token, or None. Bounces come
    back days later: the token does not expire."""
    found = unsign(secret, BOUNCE_PURPOSE, token)
    if found is None:
        return None
    campaign_hex, dash, subscriber_hex = found[0].partition("-")
    try:
        campaign_id, subscriber_id = int(campaign_hex, 16), int(subscriber_hex, 16)
    except ValueError:
        return None
    if not dash or found[0] != f"{campaign_id:x}-{subscriber_id:x}":
        return None
    return campaign_id, subscriber_id


def token_issued_at(purpose: str, token: str, secret: bytes) -> datetime:
    """When an authentic token was issued (whatever its age); ``TokenError`` otherwise."""
    return datetime.fromtimestamp(_read(purpose, token, secret)[1], UTC)
