"""A real IMAP server for the bounce tests: Debian's Dovecot (package dovecot-imapd),
started by the test on a free port of 127.0.0.1 with its own configuration, mail and
logs in a temporary folder, and stopped after. No system service is touched.

Run as root (CI), Dovecot's master keeps root and the mailbox belongs to "nobody";
run as anyone else, every part of it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "bounces"
PASSWORD = "imap-test-password-7f3a"


class Unavailable(Exception):
    pass


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    user: str
    password: str
    home: Path

    def url(self, folder: str = "INBOX") -> str:
        return f"imap://{self.user}@{self.host}:{self.port}/{folder}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int) -> str:
    if os.geteuid() == 0:
        mail_user, mail_group, login_user, internal_user = "nobody", "nogroup", "dovenull", "dovecot"
    else:
        me = pwd.getpwuid(os.geteuid())
        mail_user = login_user = internal_user = me.pw_name
        mail_group = str(os.getegid())
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = pipeline-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


@contextmanager
def imap_server(*, start_timeout: float = 20.0) -> Iterator[ImapServer]:
    """Start Dovecot; raises ``Unavailable`` (with the reason) when it cannot run here.

    Its folder is a temporary one of its own, open to Dovecot's unprivileged users
    (pytest's are private to the test's user), removed afterwards."""
    if not os.path.exists(DOVECOT):
        raise Unavailable("Dovecot is not installed (Debian package dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="pipeline-imap-"))
    try:
        yield from _serve(root, start_timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _serve(root: Path, start_timeout: float) -> Iterator[ImapServer]:
    for folder in ("run", "state", "mail"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root / "mail", "nobody", "nogroup")
    port = _free_port()
    config = root / "dovecot.conf"
    config.write_text(_config(root, port))
    # Dovecot forks into the background: its output goes to a file, not to pipes that the
    # daemon would keep open (and this call would wait on for ever).
    with open(root / "start.log", "wb") as output:
        started = subprocess.run(
            [DOVECOT, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=output, stderr=output, timeout=30
        )
    if started.returncode != 0:
        raise Unavailable(f"Dovecot did not start: {(root / 'start.log').read_text().strip()[:300]}")
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                    raise Unavailable(f"Dovecot did not answer on port {port}: {log[-300:]}") from None
                time.sleep(0.1)
        yield ImapServer("127.0.0.1", port, USER, PASSWORD, root / "mail" / USER)
    finally:
        pid_file = root / "run" / "master.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        subprocess.run(
            [shutil.which("doveadm") or "/usr/bin/doveadm", "-c", str(config), "stop"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)  # still there?
            except ProcessLookupError:
                break
            time.sleep(0.05)
