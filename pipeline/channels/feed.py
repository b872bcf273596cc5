"""Released posts -> RSS 2.0, Atom 1.0 and JSON Feed 1.1 documents (bytes).

Pure: no clock, no files. feedgen's hidden defaults are all overridden:
``lastBuildDate``/``updated`` come from the newest post (never the wall clock),
the generator carries no version, entries are appended in our order, and the
guid is the post's permalink, which never changes when the post is edited.
"""

from __future__ import annotations

import heapq
import json
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jinja2

from pipeline import urls
from pipeline.channels.templating import render_template
from pipeline.config import Settings
from pipeline.content.dates import to_utc_iso
from pipeline.content.posts import Post

if TYPE_CHECKING:
    from feedgen.feed import FeedGenerator

ATOM = "http://www.w3.org/2005/Atom"
GENERATOR = "Jameson Prosthetics publishing pipeline"


@dataclass(frozen=True)
class Feeds:
    rss: bytes
    atom: bytes
    json: bytes


def newest_first(posts: Sequence[Post], limit: int) -> list[Post]:
    # As sorted(..., reverse=True)[:limit], without sorting a whole archive for 20 items.
    return heapq.nlargest(limit, posts, key=lambda p: (p.date, p.slug))


def _image_type(url: str) -> str:
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or "image/jpeg"


def render_feeds(posts: Sequence[Post], settings: Settings, env: jinja2.Environment) -> Feeds:
    items = newest_first([p for p in posts if "feed" in p.channels], settings.feed.max_items)
    contents = {p.slug: render_template(env, "feed/content.html", {"post": p}) for p in items}
    rss = _feedgen(items, contents, settings).rss_str(pretty=True)
    atom = _repair_atom_links(_feedgen(items, contents, settings, atom=True).atom_str(pretty=True), items, settings)
    hub = settings.feed.websub_hub
    return Feeds(
        rss=_with_hub(rss, hub, rss=True) if hub else rss,
        atom=_with_hub(atom, hub, rss=False) if hub else atom,
        json=_json_feed(items, contents, settings),
    )


def _with_hub(document: bytes, hub: str, *, rss: bool) -> bytes:
    """WebSub: the feed names its hub beside its self link (``<atom:link rel="hub">``), so
    readers subscribe there and hear of a new post when the release pings it."""
    from lxml import etree

    root = etree.fromstring(document)
    parent = root.find("channel") if rss else root
    assert parent is not None
    self_link = next(e for e in parent.findall(f"{{{ATOM}}}link") if e.get("rel") == "self")
    element = etree.Element(f"{{{ATOM}}}link", attrib={"href": hub, "rel": "hub"})
    element.tail = self_link.tail
    parent.insert(list(parent).index(self_link) + 1, element)
    return bytes(etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8"))


def _feedgen(items: list[Post], contents: dict[str, str], settings: Settings, *, atom: bool = False) -> FeedGenerator:
    # Imported here, not at the top: a rebuild with nothing new skips feeds entirely
    # and should not pay for loading feedgen and lxml.
    from feedgen.feed import FeedGenerator

    clinic = settings.clinic
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)
    self_url = urls.feed_url(settings, "atom.xml" if atom else "feed.xml")
    fg.id(urls.archive_url(settings))
    fg.title(settings.feed.title)
    fg.subtitle(settings.feed.description)  # also the RSS <description>
    fg.language(clinic.language)
    fg.author({"name": settings.feed.author, "email": clinic.email})
    fg.generator(GENERATOR)
    fg.link(href=self_url, rel="self", type="application/atom+xml" if atom else "application/rss+xml")
    # RSS takes its channel <link> from the LAST link() call: the site, not the feed.
    fg.link(href=urls.archive_url(settings), rel="alternate", type="text/html")
    newest = max((p.modified for p in items), default=None)
    if newest is not None:
        fg.updated(newest)
        fg.lastBuildDate(newest)
        fg.pubDate(max(p.date for p in items))
    else:
        # An empty feed still needs a fixed date: the epoch keeps output repeatable.
        from datetime import UTC, datetime

        fg.updated(datetime(1970, 1, 1, tzinfo=UTC))
        fg.lastBuildDate(datetime(1970, 1, 1, tzinfo=UTC))
    for post in items:
        url = urls.post_url(settings, post.slug)
        entry = fg.add_entry(order="append")
        entry.id(url)
        entry.guid(url, permalink=True)
        entry.title(post.title)
        entry.link(href=url, rel="alternate", type="text/html")
        entry.published(post.date)
        entry.updated(post.modified)
        if atom:
            entry.author({"name": post.author, "email": clinic.email})
        else:
            # One author per RSS item (RSS Best Practices Profile): dc:creator, which holds
            # the post's author as written. RSS's own <author> must be that person's
            # e-mail address, and the only one we have is the clinic's shared inbox.
            entry.dc.dc_creator(post.author)
        entry.summary(post.summary)  # RSS <description> and Atom <summary>
        entry.content(contents[post.slug], type="html")  # RSS content:encoded, Atom content
        for tag in post.tags:
            entry.category(term=tag, label=tag)
        if post.image:
            entry.enclosure(post.image, 0, _image_type(post.image))
    return fg


def _repair_atom_links(document: bytes, items: list[Post], settings: Settings) -> bytes:
    """feedgen 1.0 drops every attribute but href from entry links (a shadowed variable
    in ``atom_entry``), turning an image enclosure into a second alternate link."""
    from lxml import etree

    root = etree.fromstring(document)
    for entry, post in zip(root.findall(f"{{{ATOM}}}entry"), items, strict=True):
        for link in entry.findall(f"{{{ATOM}}}link"):
            entry.remove(link)
        position = list(entry).index(entry.find(f"{{{ATOM}}}content")) + 1
        links = [{"href": urls.post_url(settings, post.slug), "rel": "alternate", "type": "text/html"}]
        if post.image:
            links.append({"href": post.image, "rel": "enclosure", "type": _image_type(post.image)})
        for offset, attributes in enumerate(links):
            element = etree.Element(f"{{{ATOM}}}link", attrib=attributes)
            element.tail = entry[position - 1].tail
            entry.insert(position + offset, element)
    return bytes(etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8"))


def _json_feed(items: list[Post], contents: dict[str, str], settings: Settings) -> bytes:
    clinic = settings.clinic
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": settings.feed.title,
        "home_page_url": urls.archive_url(settings),
        "feed_url": urls.feed_url(settings, "feed.json"),
        **({"hubs": [{"type": "WebSub", "url": settings.feed.websub_hub}]} if settings.feed.websub_hub else {}),
        "description": settings.feed.description,
        "language": clinic.language,
        "authors": [{"name": settings.feed.author, "url": clinic.base_url}],
        "items": [
            {
                "id": urls.post_url(settings, post.slug),
                "url": urls.post_url(settings, post.slug),
                "title": post.title,
                "content_html": contents[post.slug],
                "summary": post.summary,
                **({"image": post.image} if post.image else {}),
                "date_published": to_utc_iso(post.date),
                "date_modified": to_utc_iso(post.modified),
                "authors": [{"name": post.author}],
                **({"tags": list(post.tags)} if post.tags else {}),
            }
            for post in items
        ],
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
