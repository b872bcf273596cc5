"""Every public URL the pipeline hands out, in one place.

The web app (``pipeline.web.app``) serves exactly these paths, so a link in a
feed, an e-mail or a snippet always lands somewhere real.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.config import Settings

# Stands for a subscriber's signed token in the campaign's shared HTML and text;
# replaced per recipient. Underscores and letters only: safe in URLs and never
# touched by any Content-Transfer-Encoding.
TOKEN_PLACEHOLDER = "__UNSUBSCRIBE_TOKEN__"
# The same for the subscriber's "manage your e-mail" token (a purpose of its own).
MANAGE_PLACEHOLDER = "__MANAGE_TOKEN__"


def post_url(settings: Settings, slug: str) -> str:
    """The permalink, also the feed guid: it never changes once published."""
    return f"{settings.clinic.base_url}/archive/{slug}"


def archive_url(settings: Settings) -> str:
    return f"{settings.clinic.base_url}/archive/"


def digest_key(now: datetime, settings: Settings) -> str:
    """A digest's name: one a day, by the clinic's date; also its page's name (digest_url)."""
    return "digest-" + now.astimezone(settings.clinic.zone).strftime("%Y-%m-%d")


def digest_url(settings: Settings, key: str) -> str:
    return f"{settings.clinic.base_url}/archive/{key}"


def unsubscribe_url(settings: Settings, token: str = TOKEN_PLACEHOLDER) -> str:
    return f"{settings.clinic.base_url}/unsubscribe/{token}"


def manage_url(settings: Settings, token: str = MANAGE_PLACEHOLDER) -> str:
    """The page where a subscriber chooses how often they are mailed."""
    return f"{settings.clinic.base_url}/manage/{token}"


def confirm_url(settings: Settings, token: str) -> str:
    return f"{settings.clinic.base_url}/confirm/{token}"


def subscribe_url(settings: Settings) -> str:
    return f"{settings.clinic.base_url}/subscribe"


def feed_url(settings: Settings, name: str) -> str:
    return f"{settings.clinic.base_url}/{name}"


def share_image_url(settings: Settings, slug: str) -> str:
    """The post's generated share card (1200 x 630 PNG): og:image, Bluesky's thumbnail."""
    return f"{settings.clinic.base_url}/archive/{slug}.png"
