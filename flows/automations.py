"""The server's automations that end the runs whose flow process died, created (or updated, by
name) on the Prefect API that PREFECT_API_URL names; `make serve` runs this after deploying:

    python -m flows.automations [--crash-after 90] [--cancel-after 60]

- "moeflow: crash zombie runs": a flow process sends a heartbeat event every
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (`make serve` sets 30 for its worker, flows/__init__.py
  30 where it is unset; Prefect's default is 180, its minimum 30). A run whose last heartbeat is followed by neither another one nor an
  end (Completed, Failed, Cancelled, Crashed), a stop for review (Paused, Suspended) or a cancel
  (Cancelling) within --crash-after seconds is set Crashed: its process died (killed, out of memory,
  the machine gone). So --crash-after must exceed the heartbeat frequency (three beats by default).
- "moeflow: cancel runs stuck cancelling": a run still Cancelling --cancel-after seconds after the
  cancel is set Cancelled: a live flow process ends itself within seconds (it stops `dvc repro`
  first), so one still Cancelling has no process left to do it.

The server's triggers service evaluates these every 5 s (on by default in `prefect server start`).
`python -m flows.pipeline reap` remains the manual fallback (a server without these automations)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from flows.runs import RunsError, _api_errors, api_url, client
from tasks.errors import one_line_errors


CRASH = "moeflow: crash zombie runs"
CANCEL = "moeflow: cancel runs stuck cancelling"
# what ends a heartbeat's wait: another beat, an end, a stop for review, a cancel (the other automation's)
NOT_A_ZOMBIE = ("heartbeat", "Completed", "Failed", "Cancelled", "Crashed", "Paused", "Suspended", "Cancelling")
ENDS = ("Cancelled", "Completed", "Failed", "Crashed")


def _trigger(after: str, expect: tuple[str, ...], within_s: int):
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return EventTrigger(after={f"prefect.flow-run.{after}"}, expect={f"prefect.flow-run.{e}" for e in expect},
                        match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                        for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                        within=timedelta(seconds=within_s))


def automations(crash_after_s: int, cancel_after_s: int) -> list:
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    return [
        AutomationCore(
            name=CRASH, description="a run whose flow process stopped sending heartbeats is Crashed",
            trigger=_trigger("heartbeat", NOT_A_ZOMBIE, crash_after_s),
            actions=[ChangeFlowRunState(state=StateType.CRASHED, message=(
                f"crashed: no heartbeat from its flow process for {crash_after_s}s (the process died)"))]),
        AutomationCore(
            name=CANCEL, description="a run still Cancelling after the cancel has no process left: Cancelled",
            trigger=_trigger("Cancelling", ENDS, cancel_after_s),
            actions=[ChangeFlowRunState(state=StateType.CANCELLED, message=(
                f"cancelled: still Cancelling {cancel_after_s}s after the cancel (its flow process is gone)"))]),
    ]


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.automations", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crash-after", type=int, default=90,
                    help="seconds without a heartbeat before a run is Crashed (default 90)")
    ap.add_argument("--cancel-after", type=int, default=60,
                    help="seconds a run may stay Cancelling before it is Cancelled (default 60)")
    args = ap.parse_args(argv)
    from prefect.settings import get_current_settings

    beat = get_current_settings().flows.heartbeat_frequency
    if beat is None:
        raise RunsError("PREFECT_FLOWS_HEARTBEAT_FREQUENCY is unset: flow processes send no heartbeats, so a "
                        "dead one would never be noticed; set it (30 or more)")
    if args.crash_after <= beat:
        raise RunsError(f"--crash-after {args.crash_after}s must exceed the heartbeat frequency {beat}s "
                        "(PREFECT_FLOWS_HEARTBEAT_FREQUENCY), or every run would be crashed")
    if args.cancel_after < 1:
        raise RunsError(f"--cancel-after {args.cancel_after}s: must be at least 1")
    url = api_url()
    with _api_errors(url), client() as c:
        for automation in automations(args.crash_after, args.cancel_after):
            found = c.read_automations_by_name(automation.name)
            if found:
                c.update_automation(found[0].id, automation)
                for extra in found[1:]:  # a name is one automation
                    c.delete_automation(extra.id)
            else:
                c.create_automation(automation)
            print(f"automation {automation.name!r}: {'updated' if found else 'created'} at {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
