"""The ledger: one database holding subscribers, publications, release records,
campaigns and deliveries, staff and the audit log.

``Store.open(settings)`` connects (SQLite by default, any SQLAlchemy URL works) and
applies pending migrations. It is made of one part per aggregate, each in its own
module; every method is one transaction.
"""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.ledger import migrations
from pipeline.ledger.audit import AuditLog
from pipeline.ledger.bounce_rows import BounceRecords
from pipeline.ledger.campaign_leases import CampaignLeases
from pipeline.ledger.campaigns import CampaignRows
from pipeline.ledger.delivery_rows import DeliveryRows
from pipeline.ledger.digest_rows import DigestRows
from pipeline.ledger.engine import BUSY_TIMEOUT_SECONDS, Ledger, make_engine
from pipeline.ledger.meta import MetaValues
from pipeline.ledger.publications import PublicationRows
from pipeline.ledger.releases import ReleaseRecords
from pipeline.ledger.social_rows import SocialRows
from pipeline.ledger.staff import StaffRecords
from pipeline.ledger.subscriber_rows import SubscriberRows


class Store(
    Ledger,
    MetaValues,
    SubscriberRows,
    PublicationRows,
    CampaignRows,
    CampaignLeases,
    DeliveryRows,
    ReleaseRecords,
    StaffRecords,
    AuditLog,
    SocialRows,
    BounceRecords,
    DigestRows,
):
    """The ledger. Open with ``Store.open(settings)``; use as a context manager or call ``close()``."""

    @classmethod
    def open(cls, settings: Settings) -> Store:
        return cls.open_url(settings.database_url, busy_timeout=settings.database.busy_timeout_seconds)

    @classmethod
    def open_url(cls, url: str, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Store:
        engine = make_engine(url, busy_timeout=busy_timeout)
        migrations.migrate(engine)
        return cls(engine)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
