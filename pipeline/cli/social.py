"""``pipeline social post``: post a released post to Mastodon and Bluesky by hand,
through the same ledger and path as the scheduler (so never twice)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pipeline.cli.common import config_option, pass_settings
from pipeline.config import Settings
from pipeline.errors import PipelineError


@click.group("social")
def social_group() -> None:
    """Direct posting to Mastodon and Bluesky ([social.post.*] in pipeline.toml)."""


@social_group.command("post")
@config_option
@click.argument("slug")
@click.option("--platform", "platform", type=click.Choice(["mastodon", "bluesky"]), help="Only this platform.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing.")
@pass_settings
def post_command(settings: Settings, slug: str, platform: str | None, dry_run: bool) -> None:
    """Post SLUG (already released) now, to every platform with direct posting on.

    A post already posted there is not posted again; a platform paused by a refused
    credential is skipped until the credential changes. Exits 1 if any platform failed.
    """
    from pipeline.ledger.store import Store
    from pipeline.posting.owed import owe_posts
    from pipeline.posting.run import dry_run as preview
    from pipeline.posting.run import post_due
    from pipeline.site.build import find_post

    platforms = [p for p in settings.social.post.platforms() if platform in (None, p)]
    if not platforms:
        raise PipelineError(
            f"direct posting is not on for {platform or 'any platform'}",
            field=f"social.post.{platform or 'mastodon'}",
            hint="add [social.post.mastodon] server = ... or [social.post.bluesky] handle = ... to pipeline.toml",
        )
    post = find_post(settings, slug)
    if dry_run:
        for outcome in preview(settings, post, platforms):
            click.echo(f"would post to {outcome.message}\n")
        return
    now = datetime.now(UTC)
    with Store.open(settings) as store:
        if store.get_release(slug) is None:
            raise PipelineError(
                f"{slug} has not been released, so it is not posted",
                field="slug",
                hint="it is posted when the scheduler releases it (or `pipeline send` / the desk releases it)",
            )
        owe_posts(settings, store, slug, post.date, now)
        outcomes = post_due(
            settings, store, now, slugs=[slug], platforms=platforms, due_by=datetime.max.replace(tzinfo=UTC)
        )
        done = {o.platform for o in outcomes}
        for row in store.social_posts_for(slug):
            if row.platform in platforms and row.platform not in done and row.status == "posted":
                click.echo(f"{row.platform}: already posted at {row.posted_at:%Y-%m-%d %H:%M} UTC: {row.remote_url}")
    for outcome in outcomes:
        click.echo(f"{outcome.platform}: {outcome.status}: {outcome.message}")
    if any(o.status in ("failed", "paused", "retry", "held") for o in outcomes):
        raise click.exceptions.Exit(1)


COMMANDS: list[click.Command] = [social_group]
