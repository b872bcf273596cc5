"""Bluesky through the atproto SDK: a session from the app password, the post as an
``app.bsky.feed.post`` record under a record key derived from the slug, a link card
(external embed with the share card as its thumbnail) and mentions resolved to DIDs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from atproto import Client, models
from atproto_client.exceptions import (
    BadRequestError,
    InvokeTimeoutError,
    NetworkError,
    RateLimitExceededError,
    RequestException,
    UnauthorizedError,
)

from pipeline.channels.social.facets import Facet
from pipeline.content.dates import to_utc_iso
from pipeline.posting.outcomes import Posted, PostingFault, retry_after

COLLECTION = "app.bsky.feed.post"
MAX_THUMB_BYTES = 1_000_000  # app.bsky.embed.external#external thumb: maxSize 1000000


def _status(exc: RequestException) -> int:
    response = exc.response
    return int(getattr(response, "status_code", 0) or 0)


def _message(exc: RequestException) -> str:
    content = getattr(exc.response, "content", None)
    error = getattr(content, "error", None)
    message = getattr(content, "message", None)
    return ": ".join(str(part) for part in (error, message) if part) or f"HTTP {_status(exc)}"


@contextmanager
def _faults(what: str) -> Iterator[None]:
    try:
        yield
    except UnauthorizedError as exc:
        raise PostingFault(f"Bluesky refused the app password ({what}): {_message(exc)}", credential=True) from None
    except RateLimitExceededError as exc:
        wait = retry_after(getattr(exc.response, "headers", {}))
        raise PostingFault(f"Bluesky's rate limit was hit ({what})", retry=True, wait=wait) from None
    except (NetworkError, InvokeTimeoutError) as exc:
        raise PostingFault(f"Bluesky did not answer ({what}): {exc}", retry=True) from None
    except BadRequestError as exc:
        raise PostingFault(f"Bluesky refused the post ({what}): {_message(exc)}") from None
    except RequestException as exc:
        retry = _status(exc) >= 500
        raise PostingFault(f"Bluesky answered {_status(exc)} ({what}): {_message(exc)}", retry=retry) from None


def _web_url(handle: str, rkey: str) -> str:
    return f"https://bsky.app/profile/{handle}/post/{rkey}"


class BlueskyAccount:
    def __init__(self, service: str, handle: str, password: str) -> None:
        self.client = Client(base_url=f"{service}/xrpc")
        self.handle = handle
        with _faults("signing in"):
            self.client.login(handle, password, fetch_bsky_profile=False)
        self.did = str(self.client.me.did) if self.client.me else self._session_did()

    def _session_did(self) -> str:
        session: Any = getattr(self.client, "_session", None)
        return str(session.did)

    def find(self, rkey: str) -> Posted | None:
        """The record under ``rkey``, if the first attempt made it."""
        try:
            with _faults("looking for the post"):
                record: Any = self.client.com.atproto.repo.get_record(
                    {"repo": self.did, "collection": COLLECTION, "rkey": rkey}
                )
        except PostingFault as fault:
            if "RecordNotFound" in str(fault) or "Could not locate record" in str(fault):
                return None
            raise
        return Posted(str(record.uri), _web_url(self.handle, rkey))

    def resolve(self, handle: str) -> str | None:
        try:
            with _faults(f"resolving @{handle}"):
                answer: Any = self.client.com.atproto.identity.resolve_handle({"handle": handle})
        except PostingFault as fault:
            if fault.retry or fault.credential:
                raise
            return None  # no such account: the mention stays plain text
        return str(answer.did)

    def post(
        self,
        *,
        rkey: str,
        text: str,
        facets: Sequence[Facet],
        created_at: datetime,
        card: tuple[str, str, str],
        thumbnail: bytes | None,
    ) -> Posted:
        """Create the record under ``rkey``; ``card`` is the link card's (url, title, description)."""
        facet_models = []
        for facet in facets:
            feature: Any
            if facet.uri:
                feature = models.AppBskyRichtextFacet.Link(uri=facet.uri)
            elif facet.tag:
                feature = models.AppBskyRichtextFacet.Tag(tag=facet.tag)
            else:
                did = self.resolve(facet.handle)
                if did is None:
                    continue
                feature = models.AppBskyRichtextFacet.Mention(did=did)
            index = models.AppBskyRichtextFacet.ByteSlice(byte_start=facet.byte_start, byte_end=facet.byte_end)
            facet_models.append(models.AppBskyRichtextFacet.Main(index=index, features=[feature]))
        thumb = None
        if thumbnail is not None and len(thumbnail) <= MAX_THUMB_BYTES:
            with _faults("uploading the card's picture"):
                thumb = self.client.upload_blob(thumbnail).blob
        url, title, description = card
        embed = models.AppBskyEmbedExternal.Main(
            external=models.AppBskyEmbedExternal.External(uri=url, title=title, description=description, thumb=thumb)
        )
        record = models.AppBskyFeedPost.Record(
            text=text, facets=facet_models or None, embed=embed, created_at=to_utc_iso(created_at), langs=["en"]
        )
        data = models.ComAtprotoRepoCreateRecord.Data(repo=self.did, collection=COLLECTION, rkey=rkey, record=record)
        with _faults("posting"):
            created: Any = self.client.com.atproto.repo.create_record(data)
        return Posted(str(created.uri), _web_url(self.handle, rkey))
