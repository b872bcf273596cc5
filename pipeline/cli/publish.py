"""The publishing commands: build, validate, new, preview."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from pipeline.cli.common import config_option, parse_when, pass_settings, report_errors, report_warnings
from pipeline.config import Settings
from pipeline.content.posts import SLUG_PATTERN, slugify
from pipeline.errors import PipelineError
from pipeline.files import write_atomic
from pipeline.schedule.archive import MailedPages
from pipeline.site.build import ApprovalGate, BuildResult, build, find_post, load_posts
from pipeline.site.cache import PostCache

posts_option = click.option(
    "--posts",
    "posts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of posts (default from pipeline.toml).",
)


@click.command("build")
@config_option
@posts_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Output folder (default from pipeline.toml).",
)
@click.option(
    "--now", "now_text", metavar="TIME", help="Build as if it were TIME (ISO 8601; clinic zone if none). Default: now."
)
@click.option("--jobs", type=click.IntRange(1, 64), help="Worker processes (default: one per core).")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
@pass_settings
def build_command(
    settings: Settings,
    posts_dir: Path | None,
    out_dir: Path | None,
    now_text: str | None,
    jobs: int | None,
    quiet: bool,
) -> None:
    """Render every post released at --now into feeds, newsletters and social snippets.

    Invalid posts are reported and skipped; the others are still built. Exits 1
    when any post was invalid.
    """
    settings = settings.with_paths(posts=posts_dir, out=out_dir)
    now = parse_when(now_text, settings) if now_text else datetime.now(UTC)
    started = time.perf_counter()
    gate = _approval_gate(settings, now)
    with MailedPages(settings) as keeper:
        result = _build_with_progress(settings, now, jobs, gate, keeper, quiet)
    elapsed = time.perf_counter() - started
    if not quiet:
        click.echo(
            f"{len(result.released)} released, {len(result.queued)} queued, {len(result.errors)} invalid; "
            f"{result.rendered} rendered, {result.reused} unchanged, {len(result.written)} files written, "
            f"{len(result.removed)} removed -> {settings.out_dir}/ in {elapsed:.2f}s"
        )
        for post in result.withheld:
            click.echo(f"  HELD (not approved; run `pipeline approve {post.slug} --by NAME`): {post.slug}")
        for post in result.queued[:5]:
            click.echo(f"  queued: {post.slug} at {post.date.astimezone(settings.clinic.zone):%Y-%m-%d %H:%M %Z}")
    for rel in result.kept:
        click.echo(
            f"  kept online: {rel}: its post was e-mailed, so the page stays although the post is no longer "
            "published (a draft, renamed or deleted): links in that e-mail keep working"
        )
    report_warnings(result.warnings)
    from pipeline.channels.social.mentions import unconfirmed_handle_warnings

    report_warnings(unconfirmed_handle_warnings(settings))
    report_errors(result.errors)


def _build_with_progress(
    settings: Settings, now: datetime, jobs: int | None, gate: ApprovalGate | None, keeper: MailedPages, quiet: bool
) -> BuildResult:
    # This process builds once and exits: the cache it reads lives as long as it does.
    cache = PostCache(settings, for_the_process=True)
    if quiet or not sys.stderr.isatty():
        return build(settings, now, jobs=jobs, gate=gate, keeper=keeper, cache=cache)
    else:
        # rich is loaded only for a terminal: a scheduled or scripted no-op build is
        # mostly start-up time.
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True, highlight=False), transient=True) as bar:
            task = bar.add_task("render", total=None)
            return build(
                settings,
                now,
                jobs=jobs,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                gate=gate,
                keeper=keeper,
                cache=cache,
            )


def _approval_gate(settings: Settings, now: datetime) -> ApprovalGate | None:
    """Under require_approval, staff builds publish only approved posts, like the scheduler."""
    if not settings.scheduler.require_approval:
        return None
    # Imported only here: most builds never open the ledger.
    from pipeline.ledger.store import Store
    from pipeline.schedule.release import approval_gate

    with Store.open(settings) as store:
        return approval_gate(settings, store, now)


@click.command("validate")
@config_option
@posts_option
@pass_settings
def validate_command(settings: Settings, posts_dir: Path | None) -> None:
    """Check every post and template; print every problem; exit 1 if any."""
    settings = settings.with_paths(posts=posts_dir)
    from pipeline.channels.templating import make_environment  # here: a no-op build never loads jinja2

    env = make_environment(settings)
    problems: list[PipelineError] = []
    for template in sorted(env.list_templates()):
        try:
            env.get_template(template)
        except Exception as exc:  # jinja2.TemplateSyntaxError and friends
            line = getattr(exc, "lineno", None)
            problems.append(
                PipelineError(
                    str(getattr(exc, "message", exc)),
                    path=settings.templates_dir / template,
                    line=line,
                    field="template",
                )
            )
    from pipeline.channels.newsletter import render_post_newsletter
    from pipeline.channels.social.snippets import render_snippets
    from pipeline.mail.message import MessageTemplate

    posts, errors = load_posts(settings)
    problems.extend(errors)
    report_warnings(w for post in posts for w in post.warnings)
    for post in posts:
        # Everything a release would make, made and dropped: the newsletter and its web
        # page, the message a campaign freezes (its unsubscribe links), the snippets.
        try:
            newsletter = render_post_newsletter(post, settings, env)
            if "email" in post.channels:
                MessageTemplate(newsletter, settings)
            if "social" in post.channels:
                render_snippets(post, settings, env)
        except PipelineError as error:
            problems.append(error)
    if not problems:
        click.echo(f"{len(posts)} posts and {len(env.list_templates())} templates are valid.")
    report_errors(problems)


@click.command("new")
@config_option
@click.argument("title")
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="Release time (ISO 8601, to the second; clinic zone if none). Default: now, to the minute.",
)
@click.option("--slug", help="URL name (default: from the title). Written into the file, so it never changes.")
@pass_settings
def new_command(settings: Settings, title: str, at_text: str | None, slug: str | None) -> None:
    """Write a new draft post into the posts folder, print its path and what to do next.

    The post is a draft (never released) with placeholder text, which the release
    refuses until it is replaced; its slug is written into the file, so renaming the
    file or the title later keeps its archive URL and feed id.
    """
    from pipeline.content.edit import format_date
    from pipeline.content.skeleton import skeleton

    zone = settings.clinic.zone
    if at_text:
        when = parse_when(at_text, settings, option="--at")
        if when.microsecond:
            raise PipelineError(
                f"{at_text!r} has a fraction of a second",
                field="--at",
                hint="give the time to the second, e.g. 09:00:30",
            )
    else:
        when = datetime.now(UTC).replace(second=0, microsecond=0)
    slug = slug or slugify(title)
    if not slug:
        raise PipelineError("cannot make a file name from this title", field="title", hint="pass --slug my-post")
    if not SLUG_PATTERN.match(slug):
        raise PipelineError(
            f"{slug!r} is not a valid slug", field="--slug", hint="use lowercase letters, digits and hyphens"
        )
    local = when.astimezone(zone)
    path = settings.posts_dir / f"{local:%Y-%m-%d}-{slug}.md"
    if path.exists():
        raise PipelineError("a post with this name already exists", path=path, hint="choose another --slug")
    date = format_date(when, zone)
    write_atomic(path, skeleton(title=title, date=date, slug=slug, author=settings.feed.author).encode())
    click.echo(str(path))
    steps = [
        f"1. Write the article in {path}: replace the placeholder summary and body, add tags and sources.",
        f"2. Check it: `pipeline validate`, then `pipeline preview {slug}`.",
        f"3. When it is ready, check the date: line (the release time, now {date} {local:%Z}) "
        "and delete the line 'draft: true'.",
    ]
    if settings.scheduler.require_approval:
        steps.append(f"4. After the last edit, a clinician approves it: `pipeline approve {slug} --by NAME`.")
    click.echo("Next:\n" + "\n".join(f"  {step}" for step in steps))


@click.command("preview")
@config_option
@click.argument("slug")
@pass_settings
def preview_command(settings: Settings, slug: str) -> None:
    """Write one post's newsletter (even if not yet released), print its path and snippets."""
    from pipeline.channels.newsletter import render_post_newsletter
    from pipeline.channels.social.snippets import render_snippets
    from pipeline.mail.message import MessageTemplate
    from pipeline.site.outputs import newsletter_outputs

    post = find_post(settings, slug)
    from pipeline.channels.templating import make_environment

    env = make_environment(settings)
    newsletter = render_post_newsletter(post, settings, env)
    folder = settings.out_dir / "preview"
    for rel, data in newsletter_outputs(newsletter, settings, folder="preview").items():
        if rel.startswith("preview/"):
            write_atomic(settings.out_dir / rel, data)
    # The whole message as a subscriber gets it (the token left as a placeholder).
    write_atomic(folder / f"{slug}.eml", MessageTemplate(newsletter, settings).preview())
    html_path = folder / f"{slug}.html"
    click.echo(str(html_path))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Snippets for {slug}", show_lines=True)
    for column in ("platform", "length / limit", "text"):
        table.add_column(column)
    for platform, snippet in render_snippets(post, settings, env).items():
        table.add_row(platform, f"{snippet.length} / {snippet.limit}", snippet.text)
    Console(highlight=False).print(table)


COMMANDS = [build_command, validate_command, new_command, preview_command]
