"""A real PostgreSQL server for the ledger tests, and a fresh database per test.

CI (``.ci/run``) starts a throwaway cluster and exports ``PIPELINE_TEST_POSTGRES_URL``
(a URL of its maintenance database) and ``REQUIRE_POSTGRES=1``. Without that URL,
``Cluster`` starts one the same way when PostgreSQL's binaries are found: ``initdb``
into a temporary folder, listening on a unix socket only, stopped at the end of the
session. initdb and postgres refuse to run as root, so as root they run as the
``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

URL_ENV = "PIPELINE_TEST_POSTGRES_URL"
REQUIRE_ENV = "REQUIRE_POSTGRES"
SERVER_USER = "postgres"
# Throwaway data: no fsync. Enough connections for several schedulers and senders at once.
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
)


class Ledger:
    """The [database] url that ``tests.conftest.make_project`` writes; None keeps
    pipeline.toml's SQLite file. It lives here, not in conftest.py, because pytest
    imports conftest.py under a second module name as well."""

    url: str | None = None


class Unavailable(Exception):
    """No PostgreSQL server can be started here; the message says why, in one line."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's /usr/lib/postgresql/N/bin, else PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if candidates:
        return max(candidates, key=version)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def server_url(socket_dir: Path, database: str = "postgres") -> str:
    return f"postgresql+psycopg://{SERVER_USER}@/{database}?host={socket_dir}"


class Cluster:
    """A cluster in a temporary folder, reachable through a unix socket in that folder."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="pipeline-pg."))
        self.data = self.folder / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                shutil.rmtree(self.folder)
                raise Unavailable(
                    f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as "
                    "(apt-get install postgresql creates it)"
                ) from None
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]

    @property
    def url(self) -> str:
        return server_url(self.folder)

    def _run(self, *args: str) -> None:
        command = [*self._as_user, str(self.bindir / args[0]), *args[1:]]
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.folder / "server.log"
            detail = (done.stderr or done.stdout).strip() or (log.read_text() if log.exists() else "")
            raise Unavailable(f"{args[0]} failed: {' '.join(detail.split())[:300]}")

    def start(self) -> None:
        try:
            self._run("initdb", "-D", str(self.data), "-U", SERVER_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
            options = f"-k {self.folder} {SERVER_OPTIONS}"
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w", "start"
            )
        except Unavailable:
            self.stop()
            raise

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            command = [*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            subprocess.run(command, cwd=self.folder, capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


class Databases:
    """Creates and drops one database per test on the server at ``admin_url``."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def create(self) -> str:
        name = f"test_{uuid.uuid4().hex[:16]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.engine.connect() as conn:
            # FORCE: a scheduler or sender a test killed may still hold a connection.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self.engine.dispose()
