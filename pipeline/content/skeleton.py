"""The post ``pipeline new`` writes, and its placeholder text, which is never published.

A new post starts as a draft with an explicit slug (a later rename of the file or
the title keeps its feed id and archive URL). Its summary and body hold placeholder
sentences; ``parse_post`` refuses a post that is not a draft while either is still
there, so a skeleton nobody edited can never reach subscribers.
"""

from __future__ import annotations

BODY_PLACEHOLDER = "Write the article here, in Markdown, in place of this paragraph."
SUMMARY_PLACEHOLDER = "Write one or two sentences for the feed, the e-mail preview and social posts."
# What `pipeline new` wrote before its posts started as drafts: such files may still be about.
_EARLIER_PLACEHOLDERS = ("Write the article here, in Markdown.",)
PLACEHOLDERS = (BODY_PLACEHOLDER, SUMMARY_PLACEHOLDER, *_EARLIER_PLACEHOLDERS)

_SKELETON = """---
title: {title}
date: {date}
slug: {slug}
author: {author}
# Never published while the next line is here: delete it when the article is ready.
draft: true
summary: "{summary}"
tags: []
# sources:
#   - title: "Author A, et al. Study title. Journal. Year"
#     url: https://pubmed.ncbi.nlm.nih.gov/...
# image: /images/picture.jpg
# image_alt: What the picture shows, for readers who cannot see it
# channels: {{email: false}}
---
{body}
"""


def _yaml_string(text: str) -> str:
    """``text`` as a double-quoted YAML scalar on one line."""
    return '"' + " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"') + '"'


def skeleton(*, title: str, date: str, slug: str, author: str) -> str:
    return _SKELETON.format(
        title=_yaml_string(title),
        date=date,
        slug=slug,
        author=_yaml_string(author),
        summary=SUMMARY_PLACEHOLDER,
        body=BODY_PLACEHOLDER,
    )


def find_placeholder(text: str) -> int | None:
    """The index (0-based) of the first line of ``text`` holding placeholder text, or None."""
    for index, line in enumerate(text.splitlines()):
        flat = " ".join(line.split())
        if any(placeholder in flat for placeholder in PLACEHOLDERS):
            return index
    return None
