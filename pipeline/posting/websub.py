"""WebSub: tell the hub (``[feed] websub_hub``) that the feeds changed, after a release.

``hub.mode=publish`` with each feed's URL (WebSub's publishing is left to hubs; this is
the form the common hubs take). A hub that does not answer is logged and never holds up
a release: readers' apps still poll the feeds.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from urllib.parse import urlencode

from pipeline import urls
from pipeline.config import Settings

log = logging.getLogger("pipeline.websub")

FEEDS = ("feed.xml", "atom.xml", "feed.json")
TIMEOUT_SECONDS = 10.0


def ping_hub(settings: Settings) -> bool:
    """Ping the hub once per feed; True if every ping was taken (2xx)."""
    hub = settings.feed.websub_hub
    if not hub:
        return True
    taken = True
    for name in FEEDS:
        body = urlencode({"hub.mode": "publish", "hub.url": urls.feed_url(settings, name)}).encode()
        request = urllib.request.Request(hub, data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                ok = 200 <= response.status < 300
        except (urllib.error.URLError, OSError) as exc:
            log.warning("websub: the hub %s did not take the ping for %s: %s", hub, name, exc)
            taken = False
            continue
        if not ok:
            taken = False
            log.warning("websub: the hub %s answered %s for %s", hub, response.status, name)
    if taken:
        log.info("websub: pinged %s for the feeds", hub)
    return taken
