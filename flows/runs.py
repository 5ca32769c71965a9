"""The reviewer's and the operator's commands on pipeline runs, through the Prefect API that
PREFECT_API_URL names (never a temporary server of their own):

    python -m flows.pipeline resume FLOW_RUN_ID [--reject] [--note TEXT]
    python -m flows.pipeline waiting     the runs waiting for review, with full ids
    python -m flows.pipeline reap        runs whose flow process is gone: RUNNING -> Crashed, CANCELLING -> Cancelled

Each prints one line per run it names; a mistake (no API, an unknown id, a run that is not waiting)
is one `error:` line and a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from uuid import UUID

from tasks.errors import MoeflowError, one_line_errors


class RunsError(MoeflowError):
    pass


def api_url() -> str:
    """The API the commands use; none configured is an error (Prefect would start a temporary
    server on the same database, which no worker watches)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise RunsError("no Prefect API configured: set PREFECT_API_URL to the server's API, e.g. "
                        "http://127.0.0.1:4200/api (what `make serve` prints)")
    return str(url)


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@contextlib.contextmanager
def _api_errors(url: str):
    """Connection problems as one line."""
    import httpx

    try:
        yield
    except (httpx.HTTPError, OSError) as e:
        raise RunsError(f"cannot reach the Prefect API at {url}: {e}") from None


def read_run(c, flow_run_id: str, url: str):
    from prefect.exceptions import ObjectNotFound

    try:
        rid = UUID(flow_run_id)
    except ValueError:
        raise RunsError(f"{flow_run_id!r} is not a flow run id (a UUID; `python -m flows.pipeline waiting` "
                        "lists the runs waiting for review)") from None
    try:
        return c.read_flow_run(rid)
    except ObjectNotFound:
        raise RunsError(f"no flow run {rid} at {url} (`python -m flows.pipeline waiting` lists the runs "
                        "waiting for review)") from None


@one_line_errors()
def resume_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline resume",
                                 description="resume a pipeline run waiting for review")
    ap.add_argument("flow_run_id")
    ap.add_argument("--reject", action="store_true", help="stop the pipeline instead of continuing")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    url = api_url()
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import FlowPauseTimeout, resume_flow_run

    with _api_errors(url), client() as c:
        run = read_run(c, args.flow_run_id, url)
        if not run.state or not run.state.is_paused():
            raise RunsError(f"flow run {run.id} ({run.name}) is not waiting for review: it is "
                            f"{run.state.name if run.state else 'without a state'}")
        try:
            resume_flow_run(run.id, run_input={"approved": not args.reject, "note": args.note})
        except (FlowPauseTimeout, RuntimeError, ObjectNotFound) as e:
            raise RunsError(f"flow run {run.id} ({run.name}) cannot be resumed: {e}") from None
    who = "a worker picks it up and it" if run.deployment_id else "its process"
    then = "stops after review (rejected)" if args.reject else "continues after review"
    print(f"resumed flow run {run.id} ({run.name}): {who} {then}")
    return 0


def _runs_in(c, types):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    return c.read_flow_runs(flow_run_filter=FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types)))))


@one_line_errors()
def waiting_main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="python -m flows.pipeline waiting",
                            description="the flow runs waiting for review, with full ids").parse_args(argv)
    from prefect.client.schemas.objects import StateType

    url = api_url()
    with _api_errors(url), client() as c:
        runs = _runs_in(c, [StateType.PAUSED])
    for run in runs:
        since = run.state.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC") if run.state.timestamp else "?"
        print(f"{run.id}  {run.name}  {run.state.name} since {since}: python -m flows.pipeline resume {run.id}")
    if not runs:
        print(f"no flow run waits for review at {url}")
    return 0


def process_alive(pid: int) -> bool:
    """Whether the flow-run process still exists (a reused pid running something else does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"prefect" in cmdline.read_bytes()


@one_line_errors()
def reap_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="python -m flows.pipeline reap",
        description="on the worker's machine: mark the runs whose flow process is gone as Crashed (RUNNING) "
                    "or Cancelled (CANCELLING)").parse_args(argv)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Crashed

    url = api_url()
    n = 0
    with _api_errors(url), client() as c:
        for run in _runs_in(c, [StateType.RUNNING, StateType.CANCELLING]):
            pid = run.infrastructure_pid
            if not pid or not pid.split(":")[-1].isdigit():
                print(f"{run.id} ({run.name}) {run.state.name}: no process id recorded (not started by a worker): left as is")
                continue
            if process_alive(int(pid.split(":")[-1])):
                continue
            gone = f"its flow process (pid {pid}) is gone"
            state = (Cancelled(message=f"cancelled: {gone}") if run.state.type == StateType.CANCELLING
                     else Crashed(message=f"crashed: {gone}"))
            c.set_flow_run_state(run.id, state, force=True)
            print(f"{run.id} ({run.name}): {run.state.name} -> {state.name} ({gone})")
            n += 1
    if not n:
        print(f"no run to reap at {url}")
    return 0
