"""Archive pages that must stay online because their post was e-mailed, from the ledger.

Implements the build's ``ArchiveKeeper``: a link in a newsletter already sent never
breaks, even after the post became a draft, was renamed or was deleted.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from pipeline.config import Settings

if TYPE_CHECKING:  # the ledger (and SQLAlchemy) load only when a build asks
    from pipeline.ledger.store import Store


class MailedPages:
    """The ledger's e-mailed posts. Without a store of its own it opens the ledger only
    when the build asks (a plain rebuild never does), and closes it on exit."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self._store = store
        self._owned: Store | None = None
        self._mailed: frozenset[str] | None = None

    def _ledger(self) -> Store:
        if self._store is None:
            from pipeline.ledger.store import Store

            self._store = self._owned = Store.open(self.settings)
        return self._store

    def mailed(self) -> frozenset[str]:
        if self._mailed is None:
            if self._store is None and _no_ledger_yet(self.settings):
                self._mailed = frozenset()  # nothing was ever mailed: no need to create the ledger
            else:
                self._mailed = frozenset(m.slug for m in self._ledger().mailings() if m.campaign_id is not None)
        return self._mailed

    def page(self, slug: str) -> bytes | None:
        store = self._ledger()
        mailing = store.get_mailing(slug)
        if mailing is None or mailing.campaign_id is None:
            return None
        from pipeline.channels.newsletter import Newsletter  # with MJML: only for a page that is missing

        web_html = Newsletter.from_json(store.campaign_content(mailing.campaign_id)).web_html
        return web_html.encode() if web_html else None

    def __enter__(self) -> MailedPages:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = self._store = None


def _no_ledger_yet(settings: Settings) -> bool:
    url = settings.database_url
    prefix = "sqlite:///"
    return url.startswith(prefix) and url != prefix + ":memory:" and not Path(url[len(prefix) :]).exists()
