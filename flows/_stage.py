"""What every Prefect flow shares: Prefect runs DVC, DVC runs the stages.

A stage flow is `dvc repro <stage>` as a task (the pipeline flow: one per stretch of stages),
under DVC's repository lock (so dvc.lock records it and two overlapping runs cannot interleave), then
the stage's summary (reports/runs/<stage>.md, written by the plain entry point `python -m
tasks.<stage>` when DVC ran it) published as its Prefect artifact; it returns the stage's DVC
metrics. `--params FILE` makes FILE the workspace's params.yaml first (as `dvc exp run -S` edits it),
since params.yaml is what DVC tracks."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.dag import dvc_executable, load_dag
from tasks.errors import MoeflowError, one_line_errors
from tasks.fileio import atomic_copy
from tasks.params import DEFAULT_PARAMS
from tasks.params.all import load_params
from tasks.stage import summary_path

log = logging.getLogger("flows")

NETWORK_STAGES = ("scrape",)  # the only stage that talks to the network: the only one retried
LOCK_WAIT_S = 600  # how long a stage waits for another DVC command's repository lock
# a stage's own log line (tasks.stage.setup_logging: `LEVEL logger: message`, no timestamp)
STAGE_LINE = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.*)")
# DVC's own line as it reaches a stage: "Running stage 'x':" or "Stage 'x' didn't change, skipping"
DVC_STAGE_LINE = re.compile(r"(?:(Running) stage|Stage) '([\w@.-]+)'")


class StageFailed(MoeflowError):
    pass


def use_params(params_path: str | os.PathLike, root: Path) -> None:
    """Make `params_path` the project's params.yaml (validated first); refuses to overwrite
    uncommitted edits of params.yaml."""
    src, dest = Path(params_path), root / DEFAULT_PARAMS
    if not src.is_absolute():
        src = root / src
    load_params(src)  # a bad file is a one-line error before anything runs
    if src.resolve() == dest.resolve() or (dest.exists() and src.read_bytes() == dest.read_bytes()):
        return
    dirty = subprocess.run(["git", "diff", "--quiet", "--", DEFAULT_PARAMS], cwd=root).returncode == 1
    if dirty:
        raise StageFailed(f"--params {params_path}: {dest} has uncommitted changes that this would overwrite; "
                          "commit or stash them, or edit params.yaml itself")
    atomic_copy(src, dest)
    log.info("params: %s is now %s (DVC tracks params.yaml; `git checkout params.yaml` restores it)", params_path, dest)


def relay(stage: str, line: str) -> None:
    """One line of `dvc repro` output as one log record of this process (Prefect adds the one
    timestamp): a stage's own `LEVEL logger: message` keeps its level, DVC's lines are INFO."""
    m = STAGE_LINE.fullmatch(line)
    if m:
        log.log(logging.getLevelName(m[1]), "[%s] %s: %s", stage, m[2], m[3])
    else:
        log.info("[%s] %s", stage, line)


def _stop(proc: subprocess.Popen) -> None:
    """End `dvc repro` and the stage it runs (its own process group): SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _die_with_parent() -> None:
    """In the `dvc repro` child (Linux): SIGTERM when the flow process dies, however it dies (a
    worker stopped with its group, a SIGKILL); DVC then stops the stage it runs."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def repro(stages: str | list[str], root: str | os.PathLike | None = None) -> list[str]:
    """One `dvc repro STAGE...` (DVC also brings what they depend on up to date), its output logged
    line by line under the name of the stage it comes from; waits for another DVC command's lock;
    raises StageFailed with the stage's own `error:` line on failure. If this process is stopped
    (a cancelled flow run) or dies, DVC and its stage are stopped with it. Returns the stages DVC ran."""
    targets = [stages] if isinstance(stages, str) else list(stages)
    root = Path(root or Path.cwd())
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the stage's `python` is ours
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        ran: list[str] = []
        current = targets[0] if len(targets) == 1 else "dvc"
        tail: list[str] = []
        with subprocess.Popen([dvc_executable(), "repro", *targets], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              preexec_fn=_die_with_parent) as proc:
            try:
                for line in proc.stdout:
                    line = line.rstrip()
                    if not line:
                        continue
                    m = DVC_STAGE_LINE.match(line)
                    if m:
                        current = m[2]
                        if m[1]:
                            ran.append(current)
                    relay(current, line)
                    tail = (tail + [line])[-20:]
                rc = proc.wait()
            except BaseException:  # a cancelled run (TerminationSignal), Ctrl-C: DVC must not outlive it
                _stop(proc)
                raise
        if rc == 0:
            return ran
        locked = any("Unable to acquire lock" in t for t in tail)
        if locked and time.monotonic() < deadline:
            log.info("[%s] another DVC command holds the repository lock: waiting", current)
            time.sleep(5)
            continue
        # the stage's own one-line `error:` first, else DVC's
        errors = [t for t in tail if t.startswith("error:")] or [t for t in tail if t.startswith("ERROR")]
        raise StageFailed(f"stage {current} failed: {(errors or tail or ['no output'])[-1]}")


def stage_metrics(stage: str, root: Path) -> dict:
    """The stage's DVC metrics files (from dvc.yaml), read back."""
    out = {}
    for path in load_dag(root)[stage].metrics:
        p = root / path
        if p.is_file():
            out[path] = json.loads(p.read_text())
    return out


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A Prefect markdown artifact; never fatal when no API is reachable."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as e:  # noqa: BLE001 - artifacts are a convenience, the files are the record
        log.warning("could not publish Prefect artifact %s: %s", key, e)


def publish_stage(stage: str, root: Path) -> None:
    """The summary of a stage that ran (reports/runs/<stage>.md) as its `<stage>-summary` artifact.
    A stage DVC did not rerun wrote none: nothing is published (no API call, no reading of dvc.yaml;
    the key's latest artifact, from the run that last ran it, stands)."""
    path = summary_path(stage, root)
    if path.is_file():
        publish_markdown(f"{stage}-summary", path.read_text(encoding="utf-8"), f"{stage}: the stage's summary")


def repro_task(stages: str | list[str]):
    """The Prefect task that runs `dvc repro` for one stage or a stretch of stages (network stages
    retry). Never cached: DVC decides what is stale, from the files, every time (a resumed run
    calls it again, and it is a no-op where nothing changed)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    targets = [stages] if isinstance(stages, str) else list(stages)
    kw = {"retries": 2, "retry_delay_seconds": 60} if set(targets) & set(NETWORK_STAGES) else {}
    name = " ".join(targets)
    return task(repro, name=f"dvc-repro-{'-'.join(targets)}", task_run_name=f"dvc repro {name}",
                cache_policy=NO_CACHE, persist_result=False, **kw)


class _AlreadyReported(logging.Filter):
    """Drops the engine's traceback for a MoeflowError: the flow logged its one line and its state
    carries the message (a deployment run's engine re-raises the Failed state's exception)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], MoeflowError))


class _InARun(logging.Filter):
    """Lets a record through to the API handler only inside a flow or task run: outside one (a test,
    `resume`) there is no run to attach it to, and Prefect would warn once per record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return bool(getattr(record, "flow_run_id", None) or FlowRunContext.get() or TaskRunContext.get())


def api_logging() -> None:
    """The project's loggers at INFO, with Prefect's API handler (in a deployment run the engine
    imports Prefect before this package, so PREFECT_LOGGING_EXTRA_LOGGERS may not have applied):
    every stage's relayed lines and the flows' own lines reach the run's logs in the API."""
    import prefect  # noqa: F401 - configures Prefect's logging

    api = logging.getLogger("prefect.extra").handlers
    for name in ("flows", "tasks", "models", "__main__"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for handler in api:
            if not any(isinstance(f, _InARun) for f in handler.filters):
                handler.addFilter(_InARun())
            if handler not in logger.handlers:
                logger.addHandler(handler)
    for name in ("prefect.flow_runs", "prefect.engine"):  # the engine's "exited with unexpected exception"
        engine = logging.getLogger(name)
        if not any(isinstance(f, _AlreadyReported) for f in engine.filters):
            engine.addFilter(_AlreadyReported())


_raised: list[MoeflowError] = []  # this process's flow errors: the server may end a run in a state of its own


def quiet_failures(fn):
    """A MoeflowError in a flow becomes a Failed state with its one-line message (no traceback)."""
    from prefect.states import Failed

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MoeflowError as e:
            log.error("%s", e)
            _raised.append(e)
            return Failed(message=f"{type(e).__name__}: {e}", data=e)

    return wrapper


def stage_flow(stage: str):
    """The Prefect flow of one stage: `dvc repro <stage>` under DVC's lock, its summary as artifact."""
    from prefect import flow

    @flow(name=stage, description=f"dvc repro {stage}, then its summary as a Prefect artifact")
    @quiet_failures
    def run(params_path: str = DEFAULT_PARAMS) -> dict:
        root = Path.cwd()
        use_params(params_path, root)
        summary_path(stage, root).unlink(missing_ok=True)  # what remains after the run is this run's
        repro_task(stage)(stage, str(root))
        publish_stage(stage, root)
        return stage_metrics(stage, root)

    return run


@one_line_errors()
def flow_main(flow_obj, argv: list[str] | None = None, description: str = "") -> int:
    """`python -m flows.<stage> [--params FILE]`: the stage flow on an ephemeral Prefect API."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{flow_obj.name}", description=description)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    load_params(args.params)  # fail fast, before Prefect starts
    return exit_code(flow_obj(params_path=args.params, return_state=True))


def exit_code(state) -> int:
    """0 for a completed run; otherwise the one-line reason and 1 (2 for a params error)."""
    if state.is_completed():
        return 0
    try:
        err = state.result(raise_on_failure=False)
    except Exception as e:  # noqa: BLE001 - the result may not be retrievable
        err = e
    if not isinstance(err, MoeflowError) and _raised:
        err = _raised[-1]  # e.g. a pause that timed out: the server failed the run before the flow did
    if isinstance(err, MoeflowError):
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"error: finished in state {state.type.value}: {state.message}", file=sys.stderr)
    return 1


api_logging()
