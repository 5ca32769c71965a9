"""The plain entry point every stage shares: `python -m tasks.<stage> [--params FILE] [-v] --<input> PATH ...`.

This is what dvc.yaml runs: no Prefect, no server. The stage reads its own section of params.yaml
into the frozen typed config (a mistake is one `error:` line, exit 2) and takes the outputs of the
stages before it as the paths dvc.yaml hands it (`--faces data/review/faces.parquet`): it never
reads another stage's params. It runs, logs its summary, and leaves the summary as Markdown in
reports/runs/<stage>.md (untracked), which the Prefect flows publish as the stage's artifact. A
user-facing failure is one `error:` line and exit 1, never a traceback. A stage holds the
workspace's stage lock while it runs (tasks.lock): a second stage started in the same workspace
meanwhile stops at once with one `error:` line naming the holder (stage, pid, since when), exit 75.
SIGTERM and SIGHUP stop a stage as Ctrl-C does (its worker processes shut down, its state
checkpointed for the rerun), with exit 143 and 129: `kill PID` of the stage alone leaves no workers.

Only the standard library is imported at module level: from a shell without the project's
environment, `main` says how to activate it in one line instead of failing on an import."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

log = logging.getLogger("tasks.stage")

REQUIRED = ("yaml", "numpy", "pyarrow", "PIL", "cv2", "torch", "requests")  # what the stages import


class Summary(Protocol):
    def lines(self) -> list[str]: ...

    def markdown(self) -> str: ...


@dataclass(frozen=True)
class Input:
    """A path the stage reads that another stage writes (or a file outside the DAG), handed to it by
    dvc.yaml's cmd as `--<name> PATH`."""

    name: str
    help: str
    required: bool = True


def require_environment() -> None:
    """Stop with one line when this python lacks moeflow's dependencies (dvc repro runs each stage
    with the `python` on PATH: from a shell where .venv is not activated that is the system's)."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        sys.stderr.write(f"error: {sys.executable} lacks moeflow's dependencies ({', '.join(missing)}): activate the "
                         "project's environment (`source .venv/bin/activate`, made by `make demo` or `make venv`) "
                         "before `dvc repro`\n")
        raise SystemExit(2)


def setup_logging(verbose: bool = False) -> None:
    """`LEVEL logger: message` on stderr, no timestamps (a Prefect flow around `dvc repro` adds its own).
    Dask's scheduler and nanny log a dozen INFO lines per local cluster: warnings only, unless -v
    (the environment reaches the workers too; a DASK_LOGGING__DISTRIBUTED of the user's wins)."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if verbose else "warning")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("tasks", "models", "__main__"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def summary_path(stage: str, root: str | Path = ".") -> Path:
    """reports/runs/<stage>.md: the last run's summary, beside its report (tasks.reports)."""
    from tasks.reports import RUN_REPORTS

    return Path(root) / RUN_REPORTS / f"{stage}.md"


def parser(stage: str, inputs: tuple[Input, ...] = (), description: str = "") -> argparse.ArgumentParser:
    """The stage's command line (also how other commands read the paths dvc.yaml hands it: tasks.dag)."""
    from tasks.params import DEFAULT_PARAMS

    p = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=description)
    p.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml); the stage reads "
                                                             f"its `{stage}` section")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for i in inputs:
        p.add_argument(f"--{i.name.replace('_', '-')}", dest=i.name, required=i.required, metavar="PATH", help=i.help)
    return p


def main(stage: str, section: type, run: Callable[..., Summary], argv: list[str] | None = None,
         description: str = "", inputs: tuple[Input, ...] = ()) -> int:
    """Parse the command line, load the `stage` section as `section`, call `run(cfg, **inputs)`."""
    require_environment()
    from tasks.errors import one_line_errors

    return one_line_errors(interrupted="interrupted: rerun the same command to resume")(_main)(
        stage, section, run, argv, description, inputs)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While the stage runs, SIGTERM and SIGHUP raise tasks.errors.Terminated (a KeyboardInterrupt) in
    the main thread, so the stage unwinds as on Ctrl-C: each pool's `finally` shuts its workers down
    (a signal to the main process alone used to leave a detect pool computing for 45 minutes) and
    the stage's state is checkpointed. A second signal while it unwinds is ignored (SIGKILL is not)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    from tasks.errors import Terminated

    def stop(signum: int, _frame: Any) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        log.warning("%s: stopping (rerun the same command to resume)", signal.Signals(signum).name)
        raise Terminated(signum)

    before = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _peak_rss() -> dict:
    """The stage's own peak memory and its worker processes' (the largest one that ended), in MB:
    what bench/scale.py tells apart from DVC's own, which runs the stage."""
    import resource

    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "workers_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def _main(stage: str, section: type, run: Callable[..., Summary], argv: list[str] | None, description: str,
          inputs: tuple[Input, ...]) -> int:
    from tasks.fileio import atomic_write_text
    from tasks.lock import stage_lock
    from tasks.params import load_section
    from tasks.reports import report_path, write_run_report

    args = parser(stage, inputs, description).parse_args(argv)
    setup_logging(args.verbose)
    t0 = time.perf_counter()
    cfg = load_section(stage, section, args.params)  # a bad params file changes nothing, the last report included
    # SIGTERM: a clean stop, as Ctrl-C; one stage at a time in this workspace (a second one gets one line naming this)
    with stop_signals_interrupt(), stage_lock(stage):
        report_path(stage).unlink(missing_ok=True)  # this run's report only
        paths: dict[str, Any] = {i.name: getattr(args, i.name) for i in inputs}
        summary = run(cfg, **paths)
        for line in summary.lines():
            log.info("%s: %s", stage, line)
        atomic_write_text(summary_path(stage), summary.markdown())
        wall = time.perf_counter() - t0
        write_run_report(stage, {"wall_s": round(wall, 2), **_peak_rss()})
    log.info("%s: done in %.1f s (reports/runs/%s.json)", stage, wall, stage)
    return 0
