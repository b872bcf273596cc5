"""The clinic's own handles in a snippet: never a self-mention, never a guessed handle.

A snippet is published by the clinic's account on that platform, so the account's own
handle in it would only tag itself; a handle the clinic has not confirmed
(``confirmed = false`` in ``[social.handles.*]``) may belong to a stranger. Either is
written as the clinic's name instead. A confirmed handle of another platform stays only
in a form no platform reads as one of its own accounts: Mastodon's ``@user@server``
("Also on Mastodon: @JamesonProsthetics@mastodon.social"; twitter-text ends no mention
before an ``@``), where ``@JamesonProsthetics`` or ``@name.bsky.social`` would tag
whoever holds that name on X or Threads. Other people's handles,
written by staff in a post's ``social:`` text, are theirs to get right and stay as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import regex

from pipeline import DEFAULT_CONFIG
from pipeline.config import Settings
from pipeline.errors import PipelineError

# A mention as any of the platforms writes one: @name, @name@server, @name.domain.
_MENTION = regex.compile(r"(?<![\w@/])@[\w]+(?:[.-]+\w+)*(?:@\w+(?:[.-]+\w+)*)?(?![\w@])")


@dataclass(frozen=True)
class ClinicHandle:
    platform: str
    handle: str  # "@JamesonProsth", "@JamesonProsthetics@mastodon.social"
    confirmed: bool


def _key(handle: str) -> str:
    return "@" + handle.strip().lstrip("@").casefold()


def usable_handles(handles: Mapping[str, ClinicHandle], platform: str) -> dict[str, str]:
    """The handles a ``platform`` snippet may name: confirmed ones of the other platforms,
    in the ``@user@server`` form only."""
    return {
        p: h.handle for p, h in handles.items() if h.confirmed and p != platform and "@" in h.handle.strip().lstrip("@")
    }


def clean_mentions(text: str, platform: str, handles: Mapping[str, ClinicHandle], clinic_name: str) -> str:
    """``text`` with every self-mention and every unconfirmed clinic handle written as the clinic's name."""
    if "@" not in text:
        return text
    allowed = {_key(h) for h in usable_handles(handles, platform).values()}
    ours = {_key(h.handle) for h in handles.values()}

    def replace(match: regex.Match[str]) -> str:
        key = _key(match.group())
        if key in ours and key not in allowed:
            return clinic_name
        return str(match.group())

    return str(_MENTION.sub(replace, text))


def unconfirmed(handles: Mapping[str, ClinicHandle]) -> list[ClinicHandle]:
    return [h for h in handles.values() if not h.confirmed]


def clinic_handles(settings: Settings) -> dict[str, ClinicHandle]:
    return {p: ClinicHandle(p, h.handle, h.confirmed) for p, h in settings.social.handles.items()}


def unconfirmed_handle_warnings(settings: Settings) -> list[PipelineError]:
    """One warning per handle the clinic has not confirmed: it is left out of every snippet.
    Here rather than with the snippets, so a build with nothing to render never loads them."""
    return [
        PipelineError(
            f"{h.platform} handle {h.handle} is not confirmed: no snippet names it",
            path=settings.root / DEFAULT_CONFIG,
            field=f"social.handles.{h.platform}.confirmed",
            hint="once the clinic has checked that the account is theirs, set confirmed = true",
        )
        for h in unconfirmed(clinic_handles(settings))
    ]
