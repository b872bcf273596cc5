"""The ``[social]`` section of ``pipeline.toml``: the clinic's handle on each platform, and
direct posting to Mastodon and Bluesky."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from pipeline.config_base import Checks, Strict, http_url

PLATFORMS = ("x", "mastodon", "bluesky", "threads", "linkedin", "facebook", "instagram")


class Handle(Strict, frozen=True, kw_only=True):
    handle: str
    confirmed: bool = False


def _server(value: str) -> str:
    if not http_url(value):
        raise ValueError(f"server must be the server's address, e.g. https://mastodon.social, not {value!r}")
    return value.rstrip("/")


def _visibility(value: str) -> str:
    if value not in ("public", "unlisted", "private"):
        raise ValueError(f"visibility must be public, unlisted or private, not {value!r}")
    return value


class MastodonPosting(Strict, frozen=True, kw_only=True):
    server: str  # https://mastodon.social; the token is PIPELINE_MASTODON_TOKEN
    visibility: str = "public"

    checks: ClassVar[Checks] = {"server": _server, "visibility": _visibility}


def _service(value: str) -> str:
    if not http_url(value):
        raise ValueError(f"service must be an http(s) URL, not {value!r}")
    return value.rstrip("/")


class BlueskyPosting(Strict, frozen=True, kw_only=True):
    handle: str  # jamesonprosthetics.bsky.social; the app password is PIPELINE_BLUESKY_APP_PASSWORD
    service: str = "https://bsky.social"  # the account's PDS (its entryway for bsky.social accounts)

    checks: ClassVar[Checks] = {"handle": lambda value: value.strip().lstrip("@"), "service": _service}


class DirectPosting(Strict, frozen=True, kw_only=True):
    """Opt-in, per platform: the pipeline posts released posts there itself."""

    mastodon: MastodonPosting | None = None
    bluesky: BlueskyPosting | None = None
    # Attempts at one post (429, 5xx, network) before it waits for the next pass.
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 4
    retry_base_seconds: Annotated[float, Meta(ge=0)] = 2.0

    def platforms(self) -> tuple[str, ...]:
        return tuple(p for p in ("mastodon", "bluesky") if getattr(self, p) is not None)


def _handles(value: dict[str, Handle]) -> dict[str, Handle]:
    unknown = sorted(set(value) - set(PLATFORMS))
    if unknown:
        raise ValueError(f"unknown platform(s) {', '.join(unknown)}; known: {', '.join(PLATFORMS)}")
    missing = [p for p in PLATFORMS if p not in value]
    if missing:
        raise ValueError(f"missing handle(s) for {', '.join(missing)}; add [social.handles.<platform>]")
    x = value["x"].handle.lstrip("@")
    if len(x) > 15 or not x.replace("_", "").isalnum():
        raise ValueError(f"X handle @{x} is invalid: X usernames are 1-15 letters, digits or underscores")
    return value


class SocialSettings(Strict, frozen=True, kw_only=True):
    mastodon_limit: Annotated[int, Meta(ge=100)] = 500
    handles: dict[str, Handle]
    post: DirectPosting = msgspec.field(default_factory=DirectPosting)

    checks: ClassVar[Checks] = {"handles": _handles}
