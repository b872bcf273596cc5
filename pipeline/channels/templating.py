"""The one Jinja2 environment that every channel renders through.

Autoescape is on for every markup template (HTML, MJML, XML); plain-text
templates (``.txt``) are the one exception, because HTML-escaping plain text
would print ``&amp;`` to readers, and text has no markup to inject into.
StrictUndefined turns a typo in a template into an error that names the
template file and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import jinja2

from pipeline.config import Settings
from pipeline.content.dates import local_time
from pipeline.errors import PipelineError


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt")


_QUERY_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")  # what urlencode leaves as it is


def _query_value(value: str) -> str:
    return value if _QUERY_SAFE.fullmatch(value) else quote_plus(value)


def with_utm(url: str, *, source: str, medium: str, campaign: str) -> str:
    if "?" not in url and "#" not in url:
        # The common case, a permalink with no query: urlencode's output without its
        # cost (a link per platform and post adds up over a whole archive).
        return (
            f"{url}?utm_source={_query_value(source)}&utm_medium={_query_value(medium)}"
            f"&utm_campaign={_query_value(campaign)}"
        )
    tags = [("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign)]
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")]
    query += tags
    return urlunsplit(parts._replace(query=urlencode(query)))


def utm_link(settings: Settings, url: str, *, platform: str, medium: str, slug: str) -> str:
    """``url`` with the UTM tags ``[utm]`` in pipeline.toml asks for (none without it)."""
    if not settings.utm.enabled:
        return url
    fields = {"platform": platform, "medium": medium, "slug": slug}
    return with_utm(
        url,
        source=settings.utm.source.format(**fields),
        medium=settings.utm.medium.format(**fields),
        campaign=settings.utm.campaign.format(**fields),
    )


_HREF = re.compile(r"""(<a\b[^>]*?\bhref=")([^"]*)(")""", re.IGNORECASE)


def _site_links(settings: Settings) -> re.Pattern[str]:
    # An address of the clinic's own site, up to a quote, a space, a bracket or the end.
    return re.compile(re.escape(settings.clinic.base_url) + r"""(?:/[^\s"'<>()\[\]]*)?""")


def utm_site_links(text: str, settings: Settings, *, slug: str) -> str:
    """Every link in ``text`` (HTML or plain) to the clinic's own site tagged for the
    newsletter, when ``[utm]`` is enabled; links elsewhere are never touched (a tag on
    someone else's page tells them nothing they need). The unsubscribe and manage links
    are left as they are: they carry the subscriber's token, and nothing about a visit."""
    if not settings.utm.enabled:
        return text

    site = _site_links(settings)

    def tag(url: str, html: bool) -> str:
        if "/unsubscribe/" in url or "/confirm/" in url or "/manage/" in url or not site.fullmatch(url):
            return url
        # In HTML the ampersands of a query are written &amp;: undo, tag, redo.
        tagged = utm_link(settings, url.replace("&amp;", "&"), platform="newsletter", medium="email", slug=slug)
        return tagged.replace("&", "&amp;") if html else tagged

    if text.lstrip().startswith("<"):  # HTML: links only, never what loads (an image's src)
        return _HREF.sub(lambda m: m.group(1) + tag(m.group(2), True) + m.group(3), text)
    return site.sub(lambda m: tag(m.group(0), False), text)


def make_environment(settings: Settings) -> jinja2.Environment:
    cache_dir = settings.state_dir / "template-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(settings.templates_dir)),
        # Compiled templates are kept between runs (keyed by source), so a rebuild
        # does not pay for compiling them again.
        bytecode_cache=jinja2.FileSystemBytecodeCache(str(cache_dir)),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )

    env.filters["localdate"] = lambda moment, fmt="%B %-d, %Y": local_time(moment, settings, fmt)
    env.filters["utm"] = lambda url, platform, medium, slug: utm_link(
        settings, url, platform=platform, medium=medium, slug=slug
    )
    env.globals["clinic"] = settings.clinic
    env.globals["settings"] = settings
    return env


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render, turning template mistakes into one-line errors naming file and line."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise PipelineError(
            exc.message or "syntax error", path=_template_path(env, exc.name or name), line=exc.lineno, field="template"
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise PipelineError(
            f"template {exc.name} not found", path=_template_path(env, name), field="template"
        ) from None
    except jinja2.UndefinedError as exc:
        template, line = _template_frame(exc)
        raise PipelineError(
            exc.message or "undefined value",
            path=_template_path(env, template or name),
            line=line,
            field="template",
            hint="check the variable name",
        ) from None


def _template_path(env: jinja2.Environment, name: str) -> str:
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader) and loader.searchpath:
        return str(Path(loader.searchpath[0]) / name)
    return name


def _template_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost template frame of a render error (Jinja rewrites tracebacks)."""
    found: tuple[str | None, int | None] = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".html", ".mjml", ".txt", ".xml")):
            found = (Path(filename).name if "/" not in filename else filename, tb.tb_lineno)
        tb = tb.tb_next
    if found[0] and "/templates/" in found[0]:
        found = (found[0].split("/templates/", 1)[1], found[1])
    return found
