"""A real ``pipeline serve`` process on 127.0.0.1 for the tests that need a socket."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def set_base_url(config: Path, base_url: str) -> None:
    """Point the project's public base URL at the test server (links in e-mails land there)."""
    text = config.read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^base_url = ".*"$', f'base_url = "{base_url}"', text)
    assert count == 1, "pipeline.toml has no base_url line"
    config.write_text(text, encoding="utf-8")
    if re.match(r"https?://\d", base_url):
        _short_x_texts(config.parent / "posts")


def _short_x_texts(posts: Path) -> None:
    """X (twitter-text) knows no IP address as a link and counts it in full, so a site on
    127.0.0.1 leaves some posts no room for an X snippet: each post without social texts
    of its own gets its title as its X text (the tests that serve a site test no snippet)."""
    if not posts.is_dir():
        return
    for path in posts.glob("*.md"):
        text = path.read_text(encoding="utf-8")
        head, _, body = text.partition("\n---\n")
        if re.search(r"(?m)^social:", head):
            continue
        title = re.search(r"(?m)^title: (.*)$", head)
        if title:
            x_text = title.group(1).strip().strip("\"'").replace('"', "'")
            path.write_text(f'{head}\nsocial:\n  x: "{x_text}"\n---\n{body}', encoding="utf-8")


@dataclass
class LiveServer:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def live_server(project: Path, port: int, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    log = project / "serve.log"
    command = [sys.executable, "-m", "pipeline", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=project, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", log=log, process=process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"pipeline serve exited with {process.returncode}:\n{server.log_text()}")
            try:
                if httpx.get(server.url + "/subscribe", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"pipeline serve did not answer within 30 s:\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
