"""The ledger's tables as they are now: the queries use these. How a database gets
here is in migrations/.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table

from pipeline.ledger.columns import UTCDateTime
from pipeline.ledger.migrations import (
    define_bounces_0007,
    define_delivery_tables_0003,
    define_frequency_0008,
    define_release_records,
    define_social_posts,
    define_staff_and_audit,
    define_v1,
)

# --- the schema as it is now ---------------------------------------------------------

metadata = MetaData()
define_v1(metadata)
# 0003 replaced campaigns and deliveries.
metadata.remove(metadata.tables["deliveries"])
metadata.remove(metadata.tables["campaigns"])
define_delivery_tables_0003(metadata)
define_release_records(metadata)
metadata.tables["publications"].append_column(Column("campaign_id", Integer))  # 0002
define_staff_and_audit(metadata)  # 0005
meta = metadata.tables["meta"]
subscribers = metadata.tables["subscribers"]
publications = metadata.tables["publications"]
campaigns = metadata.tables["campaigns"]
deliveries = metadata.tables["deliveries"]
Index("deliveries_by_status", deliveries.c.campaign_id, deliveries.c.status, deliveries.c.id)
Index("deliveries_by_subscriber", deliveries.c.subscriber_id)
releases = metadata.tables["releases"]
holds = metadata.tables["holds"]
approvals = metadata.tables["approvals"]
# Since 0004: one row per lock ("scheduler"); see pipeline/ledger/locks.py.
scheduler_lock = Table(
    "scheduler_lock",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(200)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("acquired_at", UTCDateTime),
    Column("heartbeat_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
)
define_bounces_0007(metadata)  # 0007: bounce_events, and subscribers.status_reason / status_changed_at
bounce_events = metadata.tables["bounce_events"]
staff = metadata.tables["staff"]
staff_sessions = metadata.tables["staff_sessions"]
audit_log = metadata.tables["audit_log"]
define_social_posts(metadata)  # 0006
social_posts = metadata.tables["social_posts"]
social_pauses = metadata.tables["social_pauses"]
define_frequency_0008(metadata)  # 0008: subscribers.frequency, campaigns.audience
frequency_changes = metadata.tables["frequency_changes"]
digest_items = metadata.tables["digest_items"]
