"""The ``[social]`` section of ``pipeline.toml``: the clinic's handle on each platform, and
direct posting to Mastodon and Bluesky."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from pipeline.config_base import Strict

PLATFORMS = ("x", "mastodon", "bluesky", "threads", "linkedin", "facebook", "instagram")


class Handle(Strict):
    handle: str
    confirmed: bool = False


class MastodonPosting(Strict):
    server: str  # https://mastodon.social; the token is PIPELINE_MASTODON_TOKEN
    visibility: str = Field("public", pattern="^(public|unlisted|private)$")

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError(f"server must be the server's address, e.g. https://mastodon.social, not {value!r}")
        return value.rstrip("/")


class BlueskyPosting(Strict):
    handle: str  # jamesonprosthetics.bsky.social; the app password is PIPELINE_BLUESKY_APP_PASSWORD
    service: str = "https://bsky.social"  # the account's PDS (its entryway for bsky.social accounts)

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        return value.strip().lstrip("@")

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError(f"service must be an http(s) URL, not {value!r}")
        return value.rstrip("/")


class DirectPosting(Strict):
    """Opt-in, per platform: the pipeline posts released posts there itself."""

    mastodon: MastodonPosting | None = None
    bluesky: BlueskyPosting | None = None
    # Attempts at one post (429, 5xx, network) before it waits for the next pass.
    max_attempts: int = Field(4, ge=1, le=20)
    retry_base_seconds: float = Field(2.0, ge=0)

    def platforms(self) -> tuple[str, ...]:
        return tuple(p for p in ("mastodon", "bluesky") if getattr(self, p) is not None)


class SocialSettings(Strict):
    mastodon_limit: int = Field(500, ge=100)
    handles: dict[str, Handle]
    post: DirectPosting = DirectPosting()

    @field_validator("handles")
    @classmethod
    def _handles(cls, value: dict[str, Handle]) -> dict[str, Handle]:
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
