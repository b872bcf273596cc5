"""What the pipeline imports is what it declares.

A module that comes from a distribution outside the declared runtime dependencies works
here only by luck: Python 3.11's venv bundles setuptools (and its ``pkg_resources``),
3.12's and 3.13's do not, and setuptools 81 dropped ``pkg_resources`` altogether. So
every pipeline module is imported in a fresh interpreter, and each third-party module
that this loads must be a file of ``jameson-pipeline``'s requirements or of theirs
(by file, not by name), or stand in for a module one of them vendors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys, sysconfig
before = set(sys.modules)
import pipeline
for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    if not module.name.endswith("__main__"):  # that one runs the command line
        importlib.import_module(module.name)
paths = sysconfig.get_paths()
stdlib = (paths["stdlib"], paths["platstdlib"])
loaded = {}
for name in set(sys.modules) - before:
    file = getattr(sys.modules[name], "__file__", None) or ""
    if name.startswith("pipeline") or not file or file.startswith(stdlib) and "site-packages" not in file:
        continue
    loaded[name] = file
print(json.dumps(loaded))
"""


def _runtime_closure(root: str) -> set[str]:
    """``root`` and every distribution its runtime requirements bring, recursively
    (no extras: what a clinic's ``pip install .`` installs)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _contents(names: set[str]) -> tuple[set[Path], set[str]]:
    """The files of these distributions, and the packages they vendor (``x/_vendor/p/``):
    setuptools 80's ``pkg_resources`` loads ``packaging`` from site-packages when it is
    there (whatever its version), in place of its own copy."""
    files: set[Path] = set()
    vendored: set[str] = set()
    for name in names:
        distribution = metadata.distribution(name)
        for file in distribution.files or []:
            files.add(Path(str(distribution.locate_file(file))).resolve())
            inside = str(file).partition("/_vendor/")[2]
            if inside.endswith(".py"):
                vendored.add(inside.removesuffix(".py").partition("/")[0])
    return files, vendored


def test_every_module_the_pipeline_loads_comes_from_a_declared_dependency() -> None:
    run = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING], capture_output=True, text=True, check=True)
    loaded: dict[str, str] = json.loads(run.stdout)
    assert "twitter_text" in loaded and "sqlalchemy" in loaded  # the probe saw third-party modules
    files, vendored = _contents(_runtime_closure("jameson-pipeline"))
    owners = metadata.packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for module, file in sorted(loaded.items()):
        if Path(file).resolve() not in files and module.partition(".")[0] not in vendored:
            owner = " or ".join(sorted(set(owners.get(module.partition(".")[0], ["no distribution"]))))
            undeclared.setdefault(owner, []).append(module)
    assert not undeclared, "loaded from distributions that pyproject.toml does not declare: " + "; ".join(
        f"{owner} ({modules[0]} and {len(modules) - 1} more)" for owner, modules in undeclared.items()
    )
