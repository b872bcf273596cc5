"""One post file's entry in the post cache (``pipeline.site.cache``): what the file held
when it was last read, and the files the build made of it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.content.posts import Post
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class CacheEntry:
    """One post file as last read. Replaced, never changed: a build that fails leaves the
    cache it started from untouched."""

    stat: tuple[int, int, int]  # (mtime_ns, size, inode) of the file when it was read
    digest: str  # sha256 of its bytes
    post: Post | None  # without bodies (a post in the feeds keeps its HTML body: see shared.py)
    error: PipelineError | None
    outputs: tuple[str, ...] = ()  # the files made of these bytes, relative to out/
    snippets: Mapping[str, Mapping[str, Any]] | None = None  # for the social queue


def light(post: Post, *, keep_html: bool = False) -> Post:
    """``post`` without the bodies the cache does not need (they are large)."""
    return dataclasses.replace(post, body_markdown="", body_html=post.body_html if keep_html else "", body_text="")


def file_stamp(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_mtime_ns, info.st_size, info.st_ino)
