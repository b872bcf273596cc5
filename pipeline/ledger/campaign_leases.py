"""The lease on a campaign: which process sends it, until when. Two senders never share
a campaign. The lease of a sender that died is taken over at once if it ran on this
machine, else once it expires."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from pipeline.ledger.engine import LedgerPart, utcnow
from pipeline.ledger.schema import campaigns

LEASE_SECONDS = 60.0


class CampaignLeases(LedgerPart):
    """Campaign leases (mixed into ``Store``)."""

    @staticmethod
    def new_lease_owner() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def acquire_lease(self, campaign_id: int, owner: str, *, now: datetime | None = None) -> str | None:
        """Take the campaign for ``owner``. Returns None on success, else the current holder.

        A lease held by a dead process on this machine (killed, crashed) is taken over
        at once; one held elsewhere is respected until it expires.

        Each step is one conditional UPDATE, so of two senders asking at once exactly one
        gets the lease on every database (a read, then a write, let both through on
        PostgreSQL, whose reads do not wait for a writer). A dead holder is replaced by an
        UPDATE that names it: of two senders taking over, the second finds a live holder.
        """
        now = now or utcnow()
        free = or_(
            campaigns.c.lease_owner.is_(None),
            campaigns.c.lease_owner == owner,
            campaigns.c.lease_expires_at.is_(None),
            campaigns.c.lease_expires_at <= now,
        )
        holder: str | None = None
        for _attempt in range(3):  # a holder that lets go between two steps: ask again
            if self._take_lease(campaign_id, free, owner, now):
                return None
            holder = self._lease_holder(campaign_id)
            if holder is None:
                continue
            if owner_alive(holder):
                return holder
            if self._take_lease(campaign_id, campaigns.c.lease_owner == holder, owner, now):
                return None
        return holder or self._lease_holder(campaign_id) or "another sender"

    def _take_lease(self, campaign_id: int, condition: Any, owner: str, now: datetime) -> bool:
        with self._write() as conn:
            taken = conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, condition)
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            ).rowcount
        return bool(taken == 1)

    def _lease_holder(self, campaign_id: int) -> str | None:
        with self._read() as conn:
            holder: str | None = conn.scalar(select(campaigns.c.lease_owner).where(campaigns.c.id == campaign_id))
        return holder

    def renew_lease(self, campaign_id: int, owner: str, *, now: datetime | None = None) -> bool:
        now = now or utcnow()
        with self._write() as conn:
            return (
                conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                    .values(lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
                ).rowcount
                == 1
            )

    def release_lease(self, campaign_id: int, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )


def owner_alive(owner: str) -> bool:
    """Whether the process named in a lease still runs. Only answerable on this host:
    elsewhere we assume it does (the lease then lapses by time)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
