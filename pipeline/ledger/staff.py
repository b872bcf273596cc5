"""Staff accounts and their sessions: who may use the desk, as what, and who is signed in.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second
recommended setting), at least ``MIN_PASSWORD`` characters. A session is a row named
by the SHA-256 of a random id that only the browser's signed cookie holds; signing
out deletes the row, and a password change deletes every session of that account.

``StaffRecords`` is a part of ``Store``: every method is one transaction.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.errors import PipelineError
from pipeline.ledger.columns import STAFF_ROLES
from pipeline.ledger.engine import LedgerPart
from pipeline.ledger.schema import staff, staff_sessions

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 takes any length; a megabyte "password" would only cost CPU
# What each role may do; each role may also do everything of the roles before it.
ROLE_RIGHTS = {
    "editor": ("write", "schedule", "proof"),
    "approver": ("approve",),
    "admin": ("manage staff", "manage subscribers", "send now"),
}


@functools.cache
def _hasher() -> Any:
    from argon2 import PasswordHasher  # loaded only by commands that check passwords

    return PasswordHasher()  # Argon2id


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so that answer takes as long."""
    return str(_hasher().hash(secrets.token_urlsafe(16)))


@dataclass(frozen=True)
class StaffMember:
    id: int
    email: str
    name: str
    role: str
    created_at: datetime
    password_changed_at: datetime

    def may(self, right: str) -> bool:
        """Whether this role has ``right`` (a word from ``ROLE_RIGHTS``)."""
        for role in STAFF_ROLES:
            if right in ROLE_RIGHTS[role]:
                return True
            if role == self.role:
                return False
        return False


def _member(row: Row[Any]) -> StaffMember:
    return StaffMember(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
    )


def check_role(role: str) -> str:
    if role not in STAFF_ROLES:
        raise PipelineError(f"unknown role {role!r}", field="role", hint=f"use one of {', '.join(STAFF_ROLES)}")
    return role


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise PipelineError(
            f"the password is too short ({len(password)} characters)",
            field="password",
            hint=f"use at least {MIN_PASSWORD} characters; a few unrelated words are easy to remember",
        )
    if len(password) > MAX_PASSWORD:
        raise PipelineError("the password is too long", field="password", hint=f"use at most {MAX_PASSWORD} characters")
    return str(_hasher().hash(password))


def _verify(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(password_hash, password[:MAX_PASSWORD]))
    except (VerificationError, InvalidHashError):  # a mismatch is a VerificationError
        return False


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _email_key(email: str) -> str:
    return email.strip().lower()


class StaffRecords(LedgerPart):
    """Staff accounts and sessions (mixed into ``Store``)."""

    # --- accounts --------------------------------------------------------------------

    def add_staff(self, email: str, name: str, role: str, password: str, *, now: datetime) -> StaffMember:
        """A new account (``email`` already normalised). Refused if the address has one."""
        name = " ".join(name.split())
        if not name:
            raise PipelineError("the name is empty", field="--name", hint="give the name shown in the audit log")
        values = {
            "email": email,
            "email_key": _email_key(email),
            "name": name,
            "role": check_role(role),
            "password_hash": hash_password(password),
            "created_at": now,
            "password_changed_at": now,
        }
        try:
            with self._write() as conn:
                conn.execute(insert(staff).values(**values))
                return _member(conn.execute(select(staff).where(staff.c.email_key == values["email_key"])).one())
        except IntegrityError:
            raise PipelineError(
                f"{email} already has a staff account", field="email", hint="`pipeline staff list` shows every account"
            ) from None

    def get_staff(self, staff_id: int) -> StaffMember | None:
        with self._read() as conn:
            row = conn.execute(select(staff).where(staff.c.id == staff_id)).first()
        return _member(row) if row else None

    def get_staff_by_email(self, email: str) -> StaffMember | None:
        with self._read() as conn:
            row = conn.execute(select(staff).where(staff.c.email_key == _email_key(email))).first()
        return _member(row) if row else None

    def list_staff(self) -> list[StaffMember]:
        with self._read() as conn:
            return [_member(r) for r in conn.execute(select(staff).order_by(staff.c.email_key))]

    def remove_staff(self, email: str) -> StaffMember:
        """Delete an account and (by cascade) its sessions. Audit rows keep its name."""
        with self._write() as conn:
            row = conn.execute(select(staff).where(staff.c.email_key == _email_key(email))).first()
            if row is None:
                raise PipelineError(f"{email} has no staff account", field="email", hint="check the spelling")
            conn.execute(delete(staff_sessions).where(staff_sessions.c.staff_id == row.id))
            conn.execute(delete(staff).where(staff.c.id == row.id))
            return _member(row)

    def set_staff_password(self, email: str, password: str, *, now: datetime) -> StaffMember:
        """A new password; every session of the account ends."""
        password_hash = hash_password(password)
        with self._write() as conn:
            row = conn.execute(select(staff).where(staff.c.email_key == _email_key(email))).first()
            if row is None:
                raise PipelineError(f"{email} has no staff account", field="email", hint="check the spelling")
            conn.execute(
                update(staff).where(staff.c.id == row.id).values(password_hash=password_hash, password_changed_at=now)
            )
            conn.execute(delete(staff_sessions).where(staff_sessions.c.staff_id == row.id))
            return _member(conn.execute(select(staff).where(staff.c.id == row.id)).one())

    def check_staff_password(self, email: str, password: str) -> StaffMember | None:
        """The account if ``password`` is its password, else None; as slow either way."""
        with self._read() as conn:
            row = conn.execute(select(staff).where(staff.c.email_key == _email_key(email))).first()
        if row is None:
            _verify(_dummy_hash(), password)
            return None
        return _member(row) if _verify(row.password_hash, password) else None

    # --- sessions --------------------------------------------------------------------

    def start_session(self, staff_id: int, *, now: datetime, lifetime: timedelta) -> str:
        """A new session; returns its random id (put it in the signed cookie, nowhere else)."""
        session_id = secrets.token_urlsafe(32)
        with self._write() as conn:
            conn.execute(delete(staff_sessions).where(staff_sessions.c.expires_at <= now))
            conn.execute(
                insert(staff_sessions).values(
                    id_hash=_session_key(session_id), staff_id=staff_id, created_at=now, expires_at=now + lifetime
                )
            )
        return session_id

    def session_staff(self, session_id: str, *, now: datetime) -> StaffMember | None:
        """Who is signed in with ``session_id``, if the session is still open."""
        query = (
            select(staff)
            .join(staff_sessions, staff_sessions.c.staff_id == staff.c.id)
            .where(staff_sessions.c.id_hash == _session_key(session_id), staff_sessions.c.expires_at > now)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        return _member(row) if row else None

    def end_session(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(staff_sessions).where(staff_sessions.c.id_hash == _session_key(session_id)))

    def count_sessions(self, staff_id: int, *, now: datetime) -> int:
        with self._read() as conn:
            rows = conn.execute(
                select(staff_sessions.c.id_hash).where(
                    staff_sessions.c.staff_id == staff_id, staff_sessions.c.expires_at > now
                )
            ).all()
        return len(rows)
