import pytest

from flows.pipeline import StageFailed, in_dag_order, stop_reason, stretches
from tasks.dag import load_dag
from tests.conftest import ROOT

ORDER = list(load_dag(ROOT))


def test_stages_run_in_dag_order_whatever_order_they_are_given():
    assert in_dag_order(["tag", "review", "scrape"], ORDER) == ["scrape", "review", "tag"]
    every = in_dag_order(None, ORDER)
    assert every == ORDER and every[-1] in ("render", "export")
    assert every.index("fetch") < every.index("detect") and every.index("scrape") < every.index("detect")
    with pytest.raises(StageFailed, match="unknown stage"):
        in_dag_order(["scrape", "deploy"], ORDER)


def test_one_dvc_repro_per_stretch_cut_after_review_only_where_the_run_may_stop():
    assert stretches(ORDER, "pending") == [ORDER[:ORDER.index("review") + 1], ORDER[ORDER.index("review") + 1:]]
    assert stretches(ORDER, "always") == stretches(ORDER, "pending")
    assert stretches(ORDER, "never") == [ORDER]
    assert stretches(["scrape", "detect", "review"], "pending") == [["scrape", "detect", "review"]]
    assert stretches(["tag", "train"], "always") == [["tag", "train"]]


def test_the_run_stops_for_review_only_when_faces_without_a_decision_would_reach_training():
    pending = {"faces": 52, "reviewed": 2, "pending": 50}
    assert stop_reason("pending", True, pending, "keep") == "50 faces without a decision would reach training"
    assert stop_reason("pending", False, pending, "keep") is None  # review up to date: the reviewer saw this queue
    assert stop_reason("pending", True, {**pending, "pending": 0}, "keep") is None  # everything decided
    assert stop_reason("pending", True, pending, "drop") is None  # undecided faces never reach training
    assert stop_reason("always", False, {}, "keep") == "review_pause=always"
    assert stop_reason("never", True, pending, "keep") is None


def test_the_order_comes_from_dvc_yaml(tmp_path):
    """A stage added to dvc.yaml is part of the pipeline without touching the flow."""
    import shutil

    import yaml

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    spec["stages"] = {"audit": {"cmd": "python -m tasks.audit", "deps": ["data/render/metrics.json"],
                                "outs": ["reports/audit.json"]}, **spec["stages"]}  # first in the file, last in the DAG
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    order = list(load_dag(tmp_path))
    assert order.index("audit") > order.index("render") and order.index("scrape") < order.index("detect")



def test_dvc_repro_output_is_one_record_a_line_at_the_stage_s_level(tmp_path, monkeypatch, caplog):
    """flows._stage.repro relays `dvc repro`: a stage's own `LEVEL logger: message` (no timestamp
    of its own) keeps its level, DVC's lines are INFO, so Prefect adds the one timestamp."""
    import logging
    import warnings

    from flows import _stage

    monkeypatch.setattr(_stage, "dvc_executable", lambda: str(ROOT / "tests" / "support" / "fake_dvc.sh"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # outside a flow run: nothing for Prefect's API handler, and no warning
        with caplog.at_level(logging.INFO, logger="flows"):
            assert _stage.repro("review", tmp_path) == ["review"]
    got = sorted((r.levelname, r.getMessage()) for r in caplog.records if r.name == "flows")
    assert got == sorted([("INFO", "[review] Running stage 'review':"), ("INFO", "[review] tasks.stage: review: 52 faces"),
                          ("WARNING", "[review] tasks.taggers.choice: NO TAGGER WEIGHTS"), ("INFO", "[review]   indented DVC hint")])


def test_a_stopped_flow_stops_dvc_and_its_stage(tmp_path, monkeypatch):
    """A cancelled flow run (Prefect raises in the flow process) must not leave `dvc repro` and
    the stage it runs behind: repro stops their process group before it re-raises."""
    import os
    import signal
    import time
    from pathlib import Path

    from flows import _stage

    class Cancelled(BaseException):
        pass

    def cancel(*_):
        raise Cancelled

    monkeypatch.setattr(_stage, "dvc_executable", lambda: str(ROOT / "tests" / "support" / "slow_dvc.sh"))
    old = signal.signal(signal.SIGALRM, cancel)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.5)
        with pytest.raises(Cancelled):
            _stage.repro("train", tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    pids = [int(p) for p in (tmp_path / "slow_dvc.pids").read_text().split()]

    def running(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        try:
            return "\nState:\tZ" not in status.read_text()
        except OSError:
            return False

    deadline = time.monotonic() + 10
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if running(p)], "dvc or its stage outlived the flow"
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
