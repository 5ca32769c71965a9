"""The `pipeline` flow: every stage through `dvc repro <stage>` in dvc.yaml's DAG order, with a
stop for the human reviewer after `review`.

DVC decides what is stale and records dvc.lock; only the network stage (scrape) retries. After
`review` the run waits for a reviewer, who resumes it from the Prefect UI or with
`python -m flows.pipeline resume <flow-run-id>`. A deployment run (`prefect deployment run
'pipeline/default'`) is *suspended*: its process exits and the worker is free until the reviewer
resumes it, when the run starts again and skips the stages it already ran (persisted task
results). A run started from the command line has no deployment to come back to, so it pauses
in its own process. No answer within the timeout fails the run with a clear message.

    python -m flows.pipeline [--no-pause] [--stages scrape,detect] [--review-timeout 86400] [--params FILE]
    python -m flows.pipeline resume FLOW_RUN_ID [--reject] [--note TEXT]"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from prefect import flow
from prefect.context import FlowRunContext
from prefect.flow_runs import FlowPauseTimeout, pause_flow_run, suspend_flow_run
from prefect.input import RunInput

from flows._stage import (
    StageFailed,
    exit_code,
    publish_markdown,
    publish_stage,
    quiet_failures,
    repro_task,
    setup_logging,
    use_params,
)
from tasks.dag import load_dag
from tasks.errors import MoeflowError
from tasks.params import DEFAULT_PARAMS
from tasks.params.all import load_params
from tasks.tools.card import DEFAULT_OUT, write_card

log = logging.getLogger(__name__)
REVIEW_STAGE = "review"


class ReviewDone(RunInput):
    """What the reviewer answers when resuming the pipeline."""

    approved: bool = True  # false stops the pipeline after review
    note: str = ""


def in_dag_order(stages: list[str] | None, order: list[str]) -> list[str]:
    """The chosen stages (default: all) in dvc.yaml's DAG order; unknown names are an error."""
    chosen = list(stages or order)
    unknown = [s for s in chosen if s not in order]
    if unknown:
        raise StageFailed(f"unknown stage(s) {', '.join(unknown)} (dvc.yaml has: {', '.join(order)})")
    return [s for s in order if s in chosen]


def review_markdown(stats_path: Path) -> str:
    if not stats_path.exists():
        return "# Review\n\nNo review statistics found."
    stats = json.loads(stats_path.read_text())
    lines = ["# Review the face crops", "",
             "Open `review/queue.html`, mark false positives, save them with `python -m tasks.review merge`,",
             "then resume this run (set **approved** to false to stop here).", "", "```json",
             json.dumps(stats, indent=2, sort_keys=True)[:4000], "```"]
    return "\n".join(lines)


def wait_for_reviewer(markdown: str, timeout_s: int) -> ReviewDone | None:
    """Suspend a deployment run (its worker is released), pause a local one; the reviewer's answer."""
    run = FlowRunContext.get().flow_run
    form = ReviewDone.with_initial_data(description=markdown)
    if run.deployment_id is not None:
        log.info("pipeline suspended for review (timeout %ss): the worker is free; resume from the UI or with "
                 "`python -m flows.pipeline resume %s`", timeout_s, run.id)
        return suspend_flow_run(wait_for_input=form, timeout=timeout_s, key="review")
    log.info("pipeline paused for review (timeout %ss); resume from the UI or with "
             "`python -m flows.pipeline resume %s`", timeout_s, run.id)
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=2, key="review")
    except FlowPauseTimeout:
        raise StageFailed(f"no reviewer resumed the run within {timeout_s}s; review, merge, then start the "
                          "pipeline again") from None


@flow(name="pipeline", persist_result=True)
@quiet_failures
def pipeline(stages: list[str] | None = None, pause_for_review: bool = True, review_timeout_s: int = 86400,
             params_path: str = DEFAULT_PARAMS) -> list[str]:
    """Run the stages in DAG order through `dvc repro`; wait for a reviewer after review unless told not to."""
    root = Path.cwd()  # the project: the deployment's working directory, or where the CLI was started
    use_params(params_path, root)
    params = load_params(root / DEFAULT_PARAMS)
    chosen = in_dag_order(stages, list(load_dag(root)))
    for stage in chosen:
        repro_task(stage).with_options(persist_result=True)(stage, str(root))
        publish_stage(stage, root)
        if stage == REVIEW_STAGE and pause_for_review and stage != chosen[-1]:  # only if more follows
            md = review_markdown(root / params.review.out.stats)
            publish_markdown("review-queue", md, "review statistics: the pipeline waits for a reviewer")
            answer = wait_for_reviewer(md, review_timeout_s)
            if answer is not None and not answer.approved:
                raise StageFailed(f"the reviewer stopped the pipeline after review: {answer.note or 'no note'}")
            log.info("review approved%s", f": {answer.note}" if answer and answer.note else "")
    card = write_card(params, root / DEFAULT_OUT, root)
    publish_markdown("dataset-card", card.read_text(), "dataset card: sources, opt-outs, review, tags, model, DVC version")
    return chosen


def resume(flow_run_id: str, approved: bool, note: str) -> None:
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    resume_flow_run(UUID(flow_run_id), run_input={"approved": approved, "note": note})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("resume", help="resume a pipeline run waiting for review")
    r.add_argument("flow_run_id")
    r.add_argument("--reject", action="store_true", help="stop the pipeline instead of continuing")
    r.add_argument("--note", default="")
    ap.add_argument("--stages", default=None, help="comma-separated subset (default: all), run in DAG order")
    ap.add_argument("--no-pause", action="store_true", help="do not wait for the reviewer")
    ap.add_argument("--review-timeout", type=int, default=86400, help="seconds to wait for the reviewer")
    ap.add_argument("--params", default=DEFAULT_PARAMS, help="params file: it becomes params.yaml for the run")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        if args.cmd == "resume":
            resume(args.flow_run_id, not args.reject, args.note)
            return 0
        load_params(args.params)
        state = pipeline(stages=args.stages.split(",") if args.stages else None, pause_for_review=not args.no_pause,
                         review_timeout_s=args.review_timeout, params_path=args.params, return_state=True)
    except MoeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return exit_code(state)


if __name__ == "__main__":
    sys.exit(main())
