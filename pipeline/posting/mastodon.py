"""Mastodon through Mastodon.py: the server's limit, one status per post, and finding it again.

Mastodon makes the link card itself from the page's Open Graph tags, so a status is
text only. ``Idempotency-Key`` makes a repeated call within an hour return the first
status instead of a second one; a status older than that is found among the
account's latest statuses by the post's link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mastodon import Mastodon
from mastodon.errors import (
    MastodonAPIError,
    MastodonNetworkError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonUnauthorizedError,
)

from pipeline.posting.outcomes import Posted, PostingFault

TIMEOUT_SECONDS = 30.0
RECENT_STATUSES = 40  # how far back a status is looked for when reconciling


@contextmanager
def _faults(what: str) -> Iterator[None]:
    try:
        yield
    except MastodonUnauthorizedError as exc:
        raise PostingFault(f"Mastodon refused the access token ({what}): {_reason(exc)}", credential=True) from None
    except MastodonRatelimitError:
        raise PostingFault(f"Mastodon's rate limit was hit ({what})", retry=True) from None
    except (MastodonServerError, MastodonNetworkError) as exc:
        raise PostingFault(f"Mastodon did not answer ({what}): {_reason(exc)}", retry=True) from None
    except MastodonAPIError as exc:
        raise PostingFault(f"Mastodon refused the status ({what}): {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    parts = [str(a) for a in exc.args[1:] if a] if len(exc.args) > 1 else [str(exc)]
    return " ".join(parts) or type(exc).__name__


class MastodonAccount:
    def __init__(self, server: str, token: str, *, visibility: str = "public") -> None:
        self.api = Mastodon(
            access_token=token, api_base_url=server, ratelimit_method="throw", request_timeout=TIMEOUT_SECONDS
        )
        self.visibility = visibility

    def max_characters(self) -> int:
        """``configuration.statuses.max_characters`` from the server's instance information."""
        with _faults("instance"):
            info: Any = self.api.instance()
        try:
            return int(info["configuration"]["statuses"]["max_characters"])
        except (KeyError, TypeError, ValueError):
            return 500  # the default of a server that does not say

    def find(self, link: str) -> Posted | None:
        """The account's status that carries ``link``, among its latest."""
        with _faults("looking for the status"):
            me: Any = self.api.account_verify_credentials()
            statuses: Any = self.api.account_statuses(me["id"], limit=RECENT_STATUSES)
        for status in statuses:
            if link in str(status["content"]).replace("&amp;", "&"):
                return Posted(str(status["id"]), str(status["url"]))
        return None

    def post(self, text: str, *, key: str, wait: Callable[[float], None] | None = None) -> Posted:
        with _faults("posting"):
            status: Any = self.api.status_post(text, visibility=self.visibility, idempotency_key=key)
        return Posted(str(status["id"]), str(status["url"]))
