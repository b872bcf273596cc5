"""Whole posts straight from their files, for the commands and pages that need every
post's body at once (validate, the desk, the digest): no cache, no rendering, and
nothing imported that they do not need (the commands that list posts start fast)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import Settings
from pipeline.content.posts import Post, drop_clashing, errors_for_slug, parse_post, post_files
from pipeline.errors import PipelineError


def unreadable(display: str, exc: OSError) -> PipelineError:
    return PipelineError(
        f"could not be read: {exc.strerror or exc}", path=display, hint="check the file and build again"
    )


def display(path: str, cwd: str) -> str:
    """A post file's path as messages show it: relative to the working folder when inside it."""
    return path[len(cwd) + 1 :] if path.startswith(cwd + os.sep) else path


def load_posts(settings: Settings, *, posts_dir: Path | None = None) -> tuple[list[Post], list[PipelineError]]:
    """Every valid post (full, with bodies) and every error; slugs checked for clashes."""
    cwd = os.getcwd()
    posts, errors = [], []
    for path in post_files(posts_dir or settings.posts_dir):
        shown = display(str(path.absolute()), cwd)
        try:
            posts.append(parse_post(path.read_bytes(), shown, settings))
        except PipelineError as error:
            errors.append(error)
        except OSError as exc:  # one unreadable post never hides the others' problems
            errors.append(unreadable(shown, exc))
    kept, clashes = drop_clashing(posts)
    return kept, sorted(errors + clashes, key=lambda e: (e.path or "", e.line or 0))


def find_post(settings: Settings, slug: str) -> Post:
    """The post with this slug (drafts and future posts included), or one error saying why not:
    the post's own error if its file is broken, else the closest slug there is."""
    posts, errors = load_posts(settings)
    post = next((p for p in posts if p.slug == slug), None)
    if post is not None:
        return post
    broken = errors_for_slug(errors, slug)
    if broken:
        raise broken[0]
    close = difflib.get_close_matches(slug, [p.slug for p in posts], n=1)
    raise PipelineError(
        f"no post with slug {slug!r}",
        field="slug",
        hint=f"did you mean {close[0]!r}?" if close else "`pipeline queue` lists the queued posts",
    )


def full_posts(settings: Settings, light_posts: Iterable[Post]) -> list[Post]:
    """Re-read the bodies of a few posts from their files."""
    return [parse_post(Path(light.path).read_bytes(), light.path, settings) for light in light_posts]
