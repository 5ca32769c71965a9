"""What every stage flow shares: the CLI (`--params`), logging, one-line user errors,
and turning a MoeflowError inside a flow into a Failed state without a traceback."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from typing import Callable

from tasks.config import DEFAULT_PARAMS, load_params
from tasks.errors import MoeflowError

log = logging.getLogger("flows")


_LAST_ERROR: dict[str, MoeflowError] = {}


def stage_flow(name: str, **flow_kwargs):
    """@flow that reports a MoeflowError as a Failed state with a one-line message."""
    from prefect import flow
    from prefect.states import Failed

    def decorate(fn: Callable):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except MoeflowError as e:
                logging.getLogger(fn.__module__).error("%s", e)
                _LAST_ERROR[name] = e  # the API may replace our state (e.g. an expired pause): keep the reason
                return Failed(message=f"{type(e).__name__}: {e}", data=e)

        return flow(name=name, **flow_kwargs)(wrapper)

    return decorate


def setup_logging(verbose: bool = False) -> None:
    """Prefect's console handler serves our loggers (PREFECT_LOGGING_EXTRA_LOGGERS, set in
    flows/__init__); give them a level, since Prefect leaves them at WARNING."""
    import prefect  # noqa: F401 - configures Prefect's logging

    for name in ("flows", "tasks", "models", "__main__"):  # __main__: a flow run as python -m flows.X
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def run_stage(flow_obj, argv: list[str] | None = None, description: str = "") -> int:
    """Parse `--params`, validate params before any work, run the flow, map errors to exit codes."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{flow_obj.name}", description=description)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        load_params(args.params)  # fail fast, before Prefect starts
    except MoeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    try:
        state = flow_obj(params_path=args.params, return_state=True)
    except MoeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return exit_code(flow_obj.name, state)


def exit_code(name: str, state) -> int:
    """0 for a completed run; otherwise print the one-line reason and return the code."""
    if state.is_completed():
        return 0
    err = _LAST_ERROR.get(name)
    if err is None:
        try:
            err = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - the result may not be retrievable
            pass
    if isinstance(err, MoeflowError):
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"error: {name} finished in state {state.type.value}: {state.message}", file=sys.stderr)
    return 1


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A Prefect markdown artifact; never fatal when no API is reachable."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as e:  # noqa: BLE001 - artifacts are a convenience, the files are the record
        log.warning("could not publish Prefect artifact %s: %s", key, e)
