"""Run the release scheduler: ``python scheduler.py [--config pipeline.toml] [--transport SPEC]``.

The same as ``pipeline schedule run``; the wiring lives in ``pipeline/schedule/``.
"""

from pipeline.cli.schedule import run_command

if __name__ == "__main__":
    run_command(prog_name="scheduler.py")
