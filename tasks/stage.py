"""The plain entry point every stage shares: `python -m tasks.<stage> [--params FILE] [-v]`.

This is what dvc.yaml runs: no Prefect, no server. It reads params.yaml into the frozen typed
config (a mistake is one `error:` line, exit 2), runs the stage, logs its summary, and leaves
the summary as Markdown in reports/runs/<stage>.md (untracked), which the Prefect flows publish
as the stage's artifact. A user-facing failure is one `error:` line and exit 1, never a
traceback."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Protocol

from tasks.config import DEFAULT_PARAMS, load_params
from tasks.errors import MoeflowError
from tasks.fileio import atomic_write_text
from tasks.reports import RUN_REPORTS, report_path, write_run_report

log = logging.getLogger("tasks.stage")


class Summary(Protocol):
    def lines(self) -> list[str]: ...

    def markdown(self) -> str: ...


def setup_logging(verbose: bool = False) -> None:
    """`LEVEL logger: message` on stderr, no timestamps (a Prefect flow around `dvc repro` adds its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("tasks", "models", "__main__"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def summary_path(stage: str, root: str | Path = ".") -> Path:
    return Path(root) / RUN_REPORTS / f"{stage}.md"


def main(stage: str, run: Callable[[object], Summary], argv: list[str] | None = None, description: str = "") -> int:
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=description)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    t0 = time.perf_counter()
    report_path(stage).unlink(missing_ok=True)  # this run's report only
    try:
        params = load_params(args.params)
        summary = run(params)
    except MoeflowError as e:
        for line in str(e).splitlines() or [type(e).__name__]:  # a message of several problems: one line each
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    for line in summary.lines():
        log.info("%s: %s", stage, line)
    atomic_write_text(summary_path(stage), summary.markdown())
    wall = time.perf_counter() - t0
    write_run_report(stage, {"wall_s": round(wall, 2)})
    log.info("%s: done in %.1f s (reports/runs/%s.json)", stage, wall, stage)
    return 0
