"""The pipeline CLI with one injected fault of the machine, set by the FAULT variable:

- ``enospc:NAME``: creating any file in a folder named NAME, or any file named NAME or
  NAME.* (a hidden temporary ``.NAME.*`` too), fails with ENOSPC, as on a disk that is
  full (a stand-in for a small filesystem where none can be mounted). Whole names, not
  substrings: a random temporary name such as jinja2's ``…cacheyw8p40xf.tmp`` must not
  match ``p40`` by chance;
- ``crash-after:N``: the process dies (``os._exit(99)``, as from SIGKILL: no cleanup
  runs) at its Nth rename or replace of a file into ``out/`` (not into its staging
  folder), i.e. in the middle of publishing out/.

    python tests/faulty_pipeline.py build --now ...    (with FAULT=... in the environment)

Forked build workers inherit the patched functions.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

kind, _, argument = os.environ["FAULT"].partition(":")

if kind == "enospc":
    _open = os.open

    def _names(path: Any) -> list[str]:
        return [part.lstrip(".") for part in Path(os.fspath(path)).parts]

    def _open_on_a_full_disk(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        names = _names(path)
        if flags & os.O_CREAT and any(name == argument or name.startswith(argument + ".") for name in names):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        return _open(path, flags, mode, dir_fd=dir_fd)

    os.open = _open_on_a_full_disk

elif kind == "crash-after":
    left = [int(argument)]

    def _dying(function: Any) -> Any:
        def move(source: Any, target: Any, **kwargs: Any) -> None:
            parts = Path(os.fspath(target)).parts
            if "out" in parts and ".staging" not in parts:
                left[0] -= 1
                if left[0] <= 0:
                    os._exit(99)
            function(source, target, **kwargs)

        return move

    os.replace = _dying(os.replace)
    os.rename = _dying(os.rename)

else:
    raise SystemExit(f"unknown FAULT {kind!r}")

from pipeline.cli.main import main  # noqa: E402  (after the patch, on purpose)

sys.argv[0] = "pipeline"
main()
