"""Every runtime dependency installs from wheels on CPython 3.11, 3.12 and 3.13, on
x86_64 and aarch64 Linux, checked without those interpreters: pip resolves for each
target from wheels only (a dry run: nothing is installed). A package that would need a compiler (a Rust
toolchain, say) on a clinic's server fails here first.

Two dependencies publish source archives only (feedgen 1.0, dkimpy): they are built
here into wheels, which must be pure Python (py3-none-any), so they install anywhere
without a compiler; their own dependencies join the wheels-only check.

    python .ci/check_wheels.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ONLY = ("feedgen", "dkimpy")
PYTHONS = ("3.11", "3.12", "3.13")
ARCHES = ("x86_64", "aarch64")
GLIBCS = ("2014", "_2_28", "_2_31", "_2_34", "_2_36")  # manylinux2014 .. Debian 12/13, Ubuntu 24.04


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        dependencies = [d.split("#")[0].strip() for d in tomllib.load(handle)["project"]["dependencies"]]
    source_only = [d for d in dependencies if d.startswith(SOURCE_ONLY)]
    wheels_only = [d for d in dependencies if not d.startswith(SOURCE_ONLY)]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        pip("wheel", "-q", "--no-deps", "--no-binary", ":all:", *source_only, "-w", str(work / "built"))
        for wheel in sorted((work / "built").glob("*.whl")):
            if not wheel.name.endswith(("-py3-none-any.whl", "-py2.py3-none-any.whl")):
                sys.exit(f"not pure Python: {wheel.name}")
            with zipfile.ZipFile(wheel) as archive:
                metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                requires = Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist") or []
            wheels_only += [r for r in requires if "extra ==" not in r]
            print(f"pure Python, built from its source: {wheel.name}")
        targets = [(version, arch) for version in PYTHONS for arch in ARCHES]
        with ThreadPoolExecutor(max_workers=3) as pool:  # each resolution is mostly waiting on the index
            for version, arch in pool.map(lambda target: resolve(work, wheels_only, *target), targets):
                print(f"wheels for every runtime dependency: CPython {version} on {arch}")


def resolve(work: Path, wheels_only: list[str], version: str, arch: str) -> tuple[str, str]:
    # pip reads a requirement's marker (python_version < "3.13") for the Python that runs
    # it, not for --python-version: the target's are applied here.
    target = {"python_version": version, "python_full_version": f"{version}.0", "platform_machine": arch}
    applicable = [r for r in map(Requirement, wheels_only) if r.marker is None or r.marker.evaluate(target)]
    requirements = work / f"requirements-{version}-{arch}.txt"
    requirements.write_text("\n".join(str(r).split(";")[0] for r in applicable) + "\n")
    platforms = [a for g in GLIBCS for a in ("--platform", f"manylinux{g}_{arch}")]
    # A dry run resolves from the index's metadata (PEP 658): no wheel is downloaded.
    pip(
        "install", "-q", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", version, *platforms, "--target", str(work / f"target-{version}-{arch}"),
        "-r", str(requirements),
    )  # fmt: skip
    return version, arch


if __name__ == "__main__":
    main()
