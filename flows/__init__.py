"""Thin Prefect flows, one per stage: `python -m flows.<stage>`.

Prefect's state (PREFECT_HOME) lives inside the project, never in the home directory."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "flows,tasks,models,__main__")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# the project's loggers carry Prefect's API handler; outside a flow run (a test, `resume`) it has nowhere to send
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# a heartbeat every 30 s (Prefect's default: 180) from every flow process this package starts, so that the
# server's "crash zombie runs" automation (flows/automations.py: 90 s) never takes a live run for a dead one
os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
