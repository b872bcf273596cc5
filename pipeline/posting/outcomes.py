"""What a platform said, in three kinds the posting loop acts on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


class PostingFault(Exception):
    """A call did not post. ``retry``: 429, 5xx or the network (try again later);
    ``credential``: 401 (pause the platform until the credential changes); neither:
    the server refused the post itself (it fails, loudly, and is not tried again)."""

    def __init__(self, message: str, *, retry: bool = False, credential: bool = False, wait: float | None = None):
        super().__init__(message)
        self.retry = retry
        self.credential = credential
        self.wait = wait  # the server's Retry-After, when it gave one


@dataclass(frozen=True)
class Posted:
    remote_id: str
    url: str


def fingerprint(secret: str) -> str:
    """What the ledger keeps of a credential: enough to see it changed, nothing to use."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def retry_after(headers: object) -> float | None:
    value = None
    getter = getattr(headers, "get", None)
    if getter is not None:
        value = getter("Retry-After") or getter("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
