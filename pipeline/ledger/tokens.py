"""Signed, short, URL-safe tokens for unsubscribe and confirm links.

A token is ``<subscriber id, hex>.<issued at, unix seconds, hex>.<MAC>``, where
the MAC is HMAC-SHA256 over the purpose and those two fields, truncated to 128
bits and base64url-encoded without padding: at most 40 characters, only
``[0-9a-f.A-Za-z_-]``, no ``=``. Short and plain on purpose: a token sits in a
URL inside a quoted-printable or 8bit e-mail body and in ``List-Unsubscribe``,
and a long token risks being wrapped or mangled on the way (issue 3).

The purpose is signed but not written: an unsubscribe token can never be used
as a confirm token, nor the reverse. The web app (issue 5) verifies with
``read_token``; the secret comes from ``PIPELINE_SECRET`` or, failing that, a
random secret generated once into ``<state>/secret`` (mode 0600).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import PipelineError

SECRET_ENV = "PIPELINE_SECRET"
SECRET_FILE = "secret"
PURPOSES = ("unsubscribe", "confirm")
CONFIRM_MAX_AGE = timedelta(days=7)
_MAC_BYTES = 16
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


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def _mac(purpose: str, body: str, secret: bytes) -> str:
    # A copy of a keyed HMAC skips the key set-up; and unlike the one-shot
    # hmac.digest, it never releases the GIL, which a send loop with many threads
    # pays for dearly in waits to get it back.
    mac = _keyed(secret).copy()
    mac.update(f"{purpose}:{body}".encode("ascii"))
    digest = mac.digest()
    return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode("ascii")


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
    body = f"{subscriber_id:x}.{issued:x}"
    return f"{body}.{_mac(purpose, body, secret)}"


def read_token(
    purpose: str,
    token: str,
    secret: bytes,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> int:
    """The subscriber id in a valid token; ``TokenError`` otherwise.

    ``max_age`` defaults to none for unsubscribe (a link in an old e-mail must keep
    working, as RFC 8058 and the law expect) and to ``CONFIRM_MAX_AGE`` for confirm.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or len(token) > 64:
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
    if not hmac.compare_digest(f"{body}.{_mac(purpose, body, secret)}".encode(), token.encode("ascii", "replace")):
        raise TokenError("the link's signature does not match")
    if max_age is None and purpose == "confirm":
        max_age = CONFIRM_MAX_AGE
    now = now or datetime.now(UTC)
    issued_at = datetime.fromtimestamp(issued, UTC)
    if issued_at > now + _CLOCK_SKEW:
        raise TokenError("the link was issued in the future")
    if max_age is not None and now - issued_at > max_age:
        raise TokenError("the link has expired")
    return subscriber_id
