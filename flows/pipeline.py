"""The `pipeline` flow: every stage through DVC, with a pause for the human reviewer.

Each stage is a task that runs `dvc repro <stage>`, so DVC decides what is stale and records
dvc.lock; only the network stage (scrape) retries. After `review` the run pauses until a
reviewer resumes it (Prefect UI, or `python -m flows.pipeline resume <flow-run-id>`), with the
queue statistics in the pause form; a timeout fails the run with a clear message.

    python -m flows.pipeline [--no-pause] [--stages scrape,detect] [--review-timeout 86400]
    python -m flows.pipeline resume FLOW_RUN_ID [--reject] [--note TEXT]"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from prefect import task
from prefect.flow_runs import FlowPauseTimeout, pause_flow_run
from prefect.input import RunInput

from flows._stage import exit_code, publish_markdown, setup_logging, stage_flow
from tasks.card import DEFAULT_OUT, write_card
from tasks.config import load_params
from tasks.errors import MoeflowError

log = logging.getLogger(__name__)

STAGES = ("scrape", "detect", "review", "tag", "train", "render", "export")
NETWORK_STAGES = ("scrape",)


class StageFailed(MoeflowError):
    pass


class ReviewDone(RunInput):
    """What the reviewer answers when resuming the paused pipeline."""

    approved: bool = True  # false stops the pipeline after review
    note: str = ""


def _dvc() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else "dvc"


def repro(stage: str, cwd: str | None = None) -> str:
    """`dvc repro <stage>`, logging DVC's output; raise with its last lines on failure."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the stage's `python` is ours
    proc = subprocess.Popen([_dvc(), "repro", stage], cwd=cwd or Path.cwd(), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            log.info("[%s] %s", stage, line)
            tail = (tail + [line])[-8:]
    if proc.wait() != 0:
        errors = [t for t in tail if t.startswith("error:") or t.startswith("ERROR")]
        raise StageFailed(f"stage {stage} failed: {(errors or tail or ['no output'])[-1]}")
    return "\n".join(tail)


repro_task = task(repro, name="dvc-repro", task_run_name="dvc repro {stage}")
repro_network_task = task(repro, name="dvc-repro-network", task_run_name="dvc repro {stage}",
                          retries=2, retry_delay_seconds=60)


def in_dag_order(stages: list[str] | None) -> list[str]:
    """The chosen stages (default: all) in DAG order; unknown names are an error."""
    chosen = list(stages or STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise StageFailed(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGES)})")
    return [s for s in STAGES if s in chosen]


def review_markdown(stats_path: Path) -> str:
    if not stats_path.exists():
        return "# Review\n\nNo review statistics found."
    stats = json.loads(stats_path.read_text())
    lines = ["# Review the face crops", "",
             "Open `review/queue.html`, mark false positives, save them with `python -m flows.review merge`,",
             "then resume this run (set **approved** to false to stop here).", "", "```json",
             json.dumps(stats, indent=2, sort_keys=True)[:4000], "```"]
    return "\n".join(lines)


@stage_flow("pipeline")
def pipeline(stages: list[str] | None = None, pause_for_review: bool = True, review_timeout_s: int = 86400,
             params_path: str = "params.yaml") -> list[str]:
    """Run the stages in DAG order through `dvc repro`; pause after review unless told not to."""
    chosen = in_dag_order(stages)
    root = Path.cwd()  # the project: the deployment's working directory, or where the CLI was started
    params = load_params(root / params_path)
    done = []
    for stage in chosen:
        (repro_network_task if stage in NETWORK_STAGES else repro_task)(stage)
        done.append(stage)
        if stage == "review" and pause_for_review and stage != chosen[-1]:  # pause only if more follows
            md = review_markdown(root / params.review.out.stats)
            publish_markdown("review-queue", md, "review statistics: the pipeline waits for a reviewer")
            log.info("pipeline paused for review (timeout %ss); resume from the UI or with "
                     "`python -m flows.pipeline resume <flow-run-id>`", review_timeout_s)
            try:
                answer = pause_flow_run(wait_for_input=ReviewDone.with_initial_data(description=md),
                                        timeout=review_timeout_s, poll_interval=2)
            except FlowPauseTimeout:
                raise StageFailed(f"no reviewer resumed the run within {review_timeout_s}s; "
                                  "review, merge, then start the pipeline again") from None
            if answer is not None and not answer.approved:
                raise StageFailed(f"the reviewer stopped the pipeline after review: {answer.note or 'no note'}")
            log.info("review approved%s", f": {answer.note}" if answer and answer.note else "")
    card = write_card(params, root / DEFAULT_OUT, root)
    publish_markdown("dataset-card", card.read_text(), "dataset card: sources, opt-outs, review, tags, model, DVC version")
    return done


def resume(flow_run_id: str, approved: bool, note: str) -> None:
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    resume_flow_run(UUID(flow_run_id), run_input={"approved": approved, "note": note})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("resume", help="resume a pipeline run paused for review")
    r.add_argument("flow_run_id")
    r.add_argument("--reject", action="store_true", help="stop the pipeline instead of continuing")
    r.add_argument("--note", default="")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, run in DAG order")
    ap.add_argument("--no-pause", action="store_true", help="do not pause for the reviewer")
    ap.add_argument("--review-timeout", type=int, default=86400, help="seconds to wait for the reviewer")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        if args.cmd == "resume":
            resume(args.flow_run_id, not args.reject, args.note)
            return 0
        load_params(args.params)
        state = pipeline(stages=args.stages.split(","), pause_for_review=not args.no_pause,
                         review_timeout_s=args.review_timeout, params_path=args.params, return_state=True)
    except MoeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return exit_code("pipeline", state)


if __name__ == "__main__":
    sys.exit(main())
