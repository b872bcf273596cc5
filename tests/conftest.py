"""Shared fixtures: a private copy of the clinic's configuration and templates per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def make_project(tmp_path: Path, *, posts: Path | None = None) -> Path:
    """A project folder in tmp_path: pipeline.toml, templates/, posts/ (empty or copied)."""
    shutil.copy(ROOT / "pipeline.toml", tmp_path / "pipeline.toml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    if posts is not None:
        shutil.copytree(posts, tmp_path / "posts")
    else:
        (tmp_path / "posts").mkdir()
    return tmp_path


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
