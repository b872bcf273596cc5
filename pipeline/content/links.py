"""Links in a post: relative site paths made absolute against the clinic's base URL,
and named links (``contact:``) replaced by their address.

Used by the HTML and the plain-text renderings alike, so both say the same address.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urljoin, urlsplit

NO_LINKS: Mapping[str, str] = MappingProxyType({})


def absolute_url(url: str, base_url: str) -> str:
    """``/contact`` -> ``https://clinic.example/contact``; an absolute URL stays as it is."""
    if urlsplit(url).scheme:
        return url
    return urljoin(base_url.rstrip("/") + "/", url)


def resolve_url(url: str, base_url: str, links: Mapping[str, str] = NO_LINKS) -> str:
    """A named link's address (``contact:``), else ``url`` made absolute."""
    named = links.get(url)
    return named if named is not None else absolute_url(url, base_url)
