"""Shared fixtures: a private copy of the clinic's configuration and templates per test,
and the ledger on SQLite or on a real PostgreSQL server (``each_ledger``)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from tests.postgres import REQUIRE_ENV, URL_ENV, Cluster, Databases, Ledger, Unavailable, find_bindir

ROOT = Path(__file__).resolve().parent.parent


def make_project(tmp_path: Path, *, posts: Path | None = None) -> Path:
    """A project folder in tmp_path: pipeline.toml, templates/, posts/ (empty or copied)."""
    shutil.copy(ROOT / "pipeline.toml", tmp_path / "pipeline.toml")
    if Ledger.url is not None:
        config = tmp_path / "pipeline.toml"
        text, count = re.subn(r"(?m)^url = .*$", f"url = {json.dumps(Ledger.url)}", config.read_text())
        assert count == 1, "pipeline.toml should have one [database] url line"
        config.write_text(text)
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    if posts is not None:
        shutil.copytree(posts, tmp_path / "posts")
    else:
        (tmp_path / "posts").mkdir()
    return tmp_path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Databases]:
    """A PostgreSQL server: CI's (``PIPELINE_TEST_POSTGRES_URL``), else a throwaway cluster
    started here. Skips its tests with the reason when there is none, unless
    ``REQUIRE_POSTGRES=1`` (CI), where that is a failure."""
    cluster: Cluster | None = None
    try:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise Unavailable("psycopg is not installed (pip install -e '.[postgres]')") from None
        url = os.environ.get(URL_ENV)
        if not url:
            bindir = find_bindir()
            if bindir is None:
                raise Unavailable(f"no PostgreSQL server binaries found and {URL_ENV} is unset")
            cluster = Cluster(bindir)
            cluster.start()
            url = cluster.url
        databases = Databases(url)
        try:
            databases.check()
        except Exception as error:
            databases.close()
            raise Unavailable(f"cannot connect to {url}: {' '.join(str(error).split())[:200]}") from None
    except Unavailable as why:
        if cluster is not None:
            cluster.stop()
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but PostgreSQL is unavailable: {why}", pytrace=False)
        pytest.skip(f"PostgreSQL variant: {why}")
    yield databases
    databases.close()
    if cluster is not None:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def each_ledger(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs the test twice: on the default SQLite file, and on a fresh database of its own
    on a real PostgreSQL server. Projects made by make_project (and the ``project`` and
    ``settings`` fixtures) use it; yields the backend's name."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    server: Databases = request.getfixturevalue("postgres_server")
    url = server.create()
    monkeypatch.setattr(Ledger, "url", url)
    try:
        yield "postgresql"
    finally:
        server.drop(url)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project / "pipeline.toml")


def write_post(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_POST = """---
title: A good post
date: 2026-11-03 09:00
tags: [research]
---
Body text with a [link](/contact).
"""
