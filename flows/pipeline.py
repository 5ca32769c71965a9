"""The `pipeline` flow: every stage of dvc.yaml through `dvc repro`, with a stop for the human
reviewer after `review`.

DVC decides what is stale and records dvc.lock; only the network stage (scrape) retries. The run
makes one `dvc repro` call per stretch of stages: up to and including review, then the rest (each
stage's lines are logged under its name). After review the run stops for a reviewer when the
policy says so (`review_pause`): `pending` (the default) stops only when review ran in this run and
left faces that would reach training without a decision; `always`; `never`. The reviewer resumes it
from the Prefect UI or with `python -m flows.pipeline resume <flow-run-id>`. A deployment run
(`prefect deployment run 'pipeline/default'`) is *suspended*: its process exits and the worker is
free until the reviewer resumes it; the run then starts again from the top, and every `dvc repro`
is called again (a no-op where nothing changed, a rerun of review where the reviewer merged
decisions), so dvc.lock, the metrics and the card end consistent (a run where no stage ran keeps
a card newer than dvc.lock). A run started from the command
line has no deployment to come back to, so it pauses in its own process. No answer within the
timeout fails the run with a clear message.

    python -m flows.pipeline [--review-pause pending|always|never] [--no-pause] [--stages scrape,detect]
                             [--review-timeout 86400] [--params FILE]
    python -m flows.pipeline resume FLOW_RUN_ID [--reject] [--note TEXT]
    python -m flows.pipeline waiting        the runs waiting for review, with full ids
    python -m flows.pipeline reap           mark runs whose process is gone as Crashed (Cancelled if cancelling)"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

from prefect import flow
from prefect.context import FlowRunContext
from prefect.flow_runs import FlowPauseTimeout, pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_base_key

from flows._stage import (
    StageFailed,
    exit_code,
    publish_markdown,
    publish_stage,
    quiet_failures,
    repro_task,
    use_params,
)
from flows.runs import reap_main, resume_main, waiting_main
from tasks.dag import load_dag
from tasks.errors import MoeflowError
from tasks.fileio import atomic_write_json
from tasks.params import DEFAULT_PARAMS
from tasks.params.all import load_params
from tasks.review.merge import REVIEW_WAITING, review_waiting
from tasks.review.worksheet import make_editable
from tasks.stage import summary_path
from tasks.tools.card import DEFAULT_OUT, write_card

log = logging.getLogger("flows.pipeline")  # not __name__: a deployment loads this file as the module `pipeline`
REVIEW_STAGE = "review"
REVIEW_KEY = "review"  # the suspend's pause key: a resumed run finds the reviewer's answer under it
POLICIES = ("pending", "always", "never")


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


def stretches(chosen: list[str], policy: str) -> list[list[str]]:
    """The chosen stages cut after review when the run may stop there (and more follows): one
    `dvc repro` per stretch."""
    if policy == "never" or REVIEW_STAGE not in chosen or chosen[-1] == REVIEW_STAGE:
        return [chosen]
    cut = chosen.index(REVIEW_STAGE) + 1
    return [chosen[:cut], chosen[cut:]]


def stop_reason(policy: str, review_ran: bool, metrics: dict, unreviewed: str) -> str | None:
    """Why the run stops for the reviewer, or None. `pending`: review ran in this run and faces
    without a decision would reach training (review.unreviewed=keep)."""
    if policy == "always":
        return "review_pause=always"
    if policy == "never" or not review_ran:
        return None
    pending = int(metrics.get("pending", 0))
    if pending and unreviewed == "keep":
        return f"{pending} faces without a decision would reach training"
    return None


def resume_command(run_id) -> str:
    return f"python -m flows.pipeline resume {run_id}"


def review_markdown(stats_path: Path, run_id, reason: str) -> str:
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    lines = [f"# Review the face crops: flow run {run_id} waits", "", f"Why: {reason}.", "",
             "Open `review/queue.html`, mark false positives, save them with `python -m tasks.review merge`,",
             "then resume this run (set **approved** to false to stop here):", "", "```",
             resume_command(run_id), f"{resume_command(run_id)} --reject --note 'why'", "```", "",
             "```json", json.dumps(stats, indent=2, sort_keys=True)[:4000], "```"]
    return "\n".join(lines)


def earlier_answer() -> ReviewDone | None:
    """The reviewer's answer if this (resumed) deployment run was already suspended for review."""
    from prefect.input.actions import read_flow_run_input

    value = read_flow_run_input(keyset_from_base_key(f"suspended-{REVIEW_KEY}")["response"])
    return ReviewDone(**value) if value else None


def wait_for_reviewer(markdown: str, timeout_s: int, reason: str) -> ReviewDone | None:
    """Suspend a deployment run (its worker is released), pause a local one; the reviewer's answer."""
    run = FlowRunContext.get().flow_run
    form = ReviewDone.with_initial_data(description=markdown)
    if run.deployment_id is not None:
        log.info("pipeline suspended for review (%s; timeout %ss): the worker is free; resume from the UI or "
                 "with `%s` (or `--reject`)", reason, timeout_s, resume_command(run.id))
        return suspend_flow_run(wait_for_input=form, timeout=timeout_s, key=REVIEW_KEY)
    log.info("pipeline paused for review (%s; timeout %ss); resume from the UI or with `%s` (or `--reject`)",
             reason, timeout_s, resume_command(run.id))
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=2, key=REVIEW_KEY)
    except FlowPauseTimeout:
        raise StageFailed(f"no reviewer resumed the run within {timeout_s}s; review, merge, then start the "
                          "pipeline again") from None


def review_stop(params, root: Path, policy: str, review_ran: bool, timeout_s: int) -> None:
    """Stop for the reviewer if the policy says so (or take the answer a resumed run already has)."""
    run = FlowRunContext.get().flow_run
    answer = earlier_answer() if run.deployment_id is not None else None
    if answer is None:
        metrics_path = root / params.review.out.metrics
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        reason = stop_reason(policy, review_ran, metrics, params.review.unreviewed)
        if reason is None:
            log.info("no stop for review (review_pause=%s: %s)", policy,
                     "review ran" if review_ran else "review was up to date")
            return
        make_editable(params.review.out.queue, root)  # the reviewer saves over it: a file of its own, not DVC's link
        md = review_markdown(root / params.review.out.stats, run.id, reason)
        publish_markdown("review-queue", md, f"review: flow run {run.id} waits for a reviewer: {resume_command(run.id)}")
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(root / REVIEW_WAITING, {"run_id": str(run.id), "run_name": run.name, "since": since})
        try:
            answer = wait_for_reviewer(md, timeout_s, reason)
        except StageFailed:  # the pause timed out: nobody waits any more
            forget_waiting(root, run.id)
            raise
    forget_waiting(root, run.id)
    if answer is not None and not answer.approved:
        raise StageFailed(f"the reviewer stopped the pipeline after review: {answer.note or 'no note'}")
    log.info("review approved%s", f": {answer.note}" if answer and answer.note else "")


def forget_waiting(root: Path, run_id) -> None:
    """The run went past review: `tasks.review merge` no longer names it (another run's note stays)."""
    waiting = review_waiting(root)
    if waiting and waiting.get("run_id") == str(run_id):
        (root / REVIEW_WAITING).unlink(missing_ok=True)


@flow(name="pipeline", persist_result=True)
@quiet_failures
def pipeline(stages: list[str] | None = None, review_pause: str = "pending", review_timeout_s: int = 86400,
             params_path: str = DEFAULT_PARAMS) -> list[str]:
    """Run the stages through `dvc repro`; stop for a reviewer after review as `review_pause` says."""
    root = Path.cwd()  # the project: the deployment's working directory, or where the CLI was started
    if review_pause not in POLICIES:
        raise StageFailed(f"review_pause: {review_pause!r} is not one of {', '.join(POLICIES)}")
    use_params(params_path, root)
    params = load_params(root / DEFAULT_PARAMS)
    chosen = in_dag_order(stages, list(load_dag(root)))
    ran_here: list[str] = []
    for stretch in stretches(chosen, review_pause):
        for stage in stretch:
            summary_path(stage, root).unlink(missing_ok=True)  # what remains after the run is this run's
        ran = repro_task(stretch)(stretch, str(root))
        ran_here += ran
        for stage in stretch:
            publish_stage(stage, root)
        if stretch[-1] == REVIEW_STAGE and stretch is not chosen and review_pause != "never":
            review_stop(params, root, review_pause, REVIEW_STAGE in ran, review_timeout_s)
    card = root / DEFAULT_OUT
    if not ran_here and card_is_current(card, root):
        log.info("dataset card up to date: no stage ran, and %s is newer than dvc.lock", DEFAULT_OUT)
        return chosen
    write_card(params, card, root)
    publish_markdown("dataset-card", card.read_text(), "dataset card: sources, opt-outs, review, tags, model, DVC version")
    return chosen


def card_is_current(card: Path, root: Path) -> bool:
    """Whether the card was written after dvc.lock last changed (a run where no stage ran keeps it)."""
    lock = root / "dvc.lock"
    return card.is_file() and lock.is_file() and card.stat().st_mtime >= lock.stat().st_mtime


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"resume": resume_main, "waiting": waiting_main, "reap": reap_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=None, help="comma-separated subset (default: all), run in DAG order")
    ap.add_argument("--review-pause", choices=POLICIES, default="pending",
                    help="when to stop for the reviewer after review (default: pending)")
    ap.add_argument("--no-pause", action="store_true", help="do not wait for the reviewer (--review-pause never)")
    ap.add_argument("--review-timeout", type=int, default=86400, help="seconds to wait for the reviewer")
    ap.add_argument("--params", default=DEFAULT_PARAMS, help="params file: it becomes params.yaml for the run")
    args = ap.parse_args(argv)
    try:
        load_params(args.params)
        state = pipeline(stages=args.stages.split(",") if args.stages else None,
                         review_pause="never" if args.no_pause else args.review_pause,
                         review_timeout_s=args.review_timeout, params_path=args.params, return_state=True)
    except MoeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return exit_code(state)


if __name__ == "__main__":
    sys.exit(main())
