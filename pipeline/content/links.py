"""Links in a post: relative site paths made absolute against the clinic's base URL.

Used by the HTML and the plain-text renderings alike, so both say the same address.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit


def absolute_url(url: str, base_url: str) -> str:
    """``/contact`` -> ``https://clinic.example/contact``; an absolute URL stays as it is."""
    if urlsplit(url).scheme:
        return url
    return urljoin(base_url.rstrip("/") + "/", url)
