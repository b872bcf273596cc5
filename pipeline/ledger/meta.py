"""Single values the pipeline keeps in the ledger: when it first ran, when the last digest went out."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.engine import LedgerPart
from pipeline.ledger.schema import meta


class MetaValues(LedgerPart):
    """The ``meta`` table: a key and a text value (mixed into ``Store``)."""

    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            value: str | None = conn.scalar(select(meta.c.value).where(meta.c.key == key))
            return value

    def set_meta(self, key: str, value: str) -> None:
        try:
            with self._write() as conn:
                if conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount == 0:
                    conn.execute(insert(meta).values(key=key, value=value))
        except IntegrityError:
            # Another process inserted the key after our update found nothing (PostgreSQL's
            # reads do not wait for writers; SQLite's BEGIN IMMEDIATE does): now it exists.
            with self._write() as conn:
                conn.execute(update(meta).where(meta.c.key == key).values(value=value))

    def setdefault_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless the key already has one; return what is stored (e.g. first_run_at)."""
        try:
            with self._write() as conn:
                current: str | None = conn.scalar(select(meta.c.value).where(meta.c.key == key))
                if current is not None:
                    return current
                conn.execute(insert(meta).values(key=key, value=value))
                return value
        except IntegrityError:  # another process stored one first (see set_meta): theirs stands
            stored = self.get_meta(key)
            if stored is None:
                raise
            return stored

    def delete_meta(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(delete(meta).where(meta.c.key == key))

    def meta_values(self, prefix: str) -> list[str]:
        """The values of every key starting with ``prefix`` (taken literally: ``%`` and ``_`` too)."""
        with self._read() as conn:
            return list(conn.scalars(select(meta.c.value).where(meta.c.key.startswith(prefix, autoescape=True))))
