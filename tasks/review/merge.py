"""The reviewer's merge: append the verdicts filled into the queue (or a file downloaded from
the contact sheet) to the decisions CSV, keeping every existing line byte for byte.

A verdict that contradicts a recorded one, or any malformed cell, is an error and nothing is
written. A verdict on a face_id that is not in faces.parquet is an error too (a mistyped id,
or a queue older than the last detect run), unless `keep_missing`: then it is recorded all
the same, as an orphan, by the CSV's own rule: it is listed in the stats and applies again if
the face returns. Holds the decisions lock (tasks.review.lock) while it reads and writes."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.decisions import (QUEUE_COLUMNS, append_decisions, control_problem, decisions_of, read_csv,
                                      read_decisions)
from tasks.artifacts.faces import read_faces
from tasks.errors import ReviewError
from tasks.params.review import ReviewConfig
from tasks.review.lock import decisions_lock

log = logging.getLogger(__name__)

# The pipeline run that waits for a reviewer in this workspace: written by flows.pipeline when it stops
# after review, removed when that run goes past review; merge's message names it.
REVIEW_WAITING = Path("reports") / "review_waiting.json"


def review_waiting(root: str | Path = ".") -> dict | None:
    """The run the pipeline last left waiting for review here ({run_id, run_name, since}), if any: None
    when there is no such file, or it is not an object naming a run_id (a damaged or hand-edited one
    is ignored, with a warning: merge's message then lists how to find waiting runs instead)."""
    path = Path(root) / REVIEW_WAITING
    try:
        w = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
    if not isinstance(w, dict) or not isinstance(w.get("run_id"), str) or not w["run_id"]:
        log.warning("ignoring %s: no run_id in it", path)
        return None
    return w


@dataclass
class MergeResult:
    source: str
    target: str
    added: int = 0
    added_fp: int = 0
    already: int = 0
    undecided: int = 0
    orphans: int = 0  # of the added: verdicts on faces not in the faces dataset (keep_missing)
    waiting: dict | None = None  # the pipeline run waiting for review here (tasks.reports.review_waiting)

    def message(self) -> str:
        if not self.added:
            return (f"nothing new to merge from {self.source} ({self.already} verdicts already recorded, "
                    f"{self.undecided} rows undecided)")
        orphans = (f" {self.orphans} of them name faces not in the faces dataset: kept as orphans, "
                   "they apply again if the face returns." if self.orphans else "")
        head = (f"merged {self.added} verdicts ({self.added_fp} false positives) into {self.target}; "
                f"{self.already} already recorded, {self.undecided} rows still undecided.{orphans} Commit the CSV; ")
        w = self.waiting
        if w:
            return head + (f"then resume flow run {w.get('run_name', '?')} ({w['run_id']}), waiting for review here "
                           f"since {w.get('since', '?')}: `python -m flows.pipeline resume {w['run_id']}` "
                           "(it reruns review with these decisions; `python -m flows.pipeline waiting` shows whether "
                           "it still waits).")
        return head + ("then run `dvc repro`, or resume a pipeline run waiting for review (`python -m flows.pipeline "
                       "waiting` lists them with the exact `python -m flows.pipeline resume <id>`): either reruns "
                       "review with these decisions.")


def _present(face_ids: list[str], faces: str | os.PathLike) -> set[str]:
    """Which of `face_ids` are in the faces dataset: its id column only, matched in Arrow (no Python
    string a face of the dataset)."""
    wanted = pa.array(face_ids, pa.string())
    ids = read_faces(faces, ["face_id"]).column("face_id").combine_chunks()
    return set(wanted.filter(pc.is_in(wanted, value_set=ids)).to_pylist())


def merge(cfg: ReviewConfig, faces: str | os.PathLike, source: str | os.PathLike | None = None,
          reviewer: str = "", keep_missing: bool = False) -> MergeResult:
    """Append the filled-in verdicts of `source` (default: the queue) to the decisions CSV."""
    src = Path(source or cfg.out.queue)
    target = Path(cfg.decisions)
    if control_problem(reviewer):
        raise ReviewError(f"--reviewer: {control_problem(reviewer)} (it goes into {target}: printable text only)")
    with decisions_lock(target, "merge"):
        if not src.exists():
            raise ReviewError(f"{src}: file not found" + ("" if source else " (export the queue first: `dvc repro review`)"))
        table = read_csv(src, QUEUE_COLUMNS)
        new = decisions_of(table)
        existing_table, existing = read_decisions(target) if target.exists() else (None, {})
        known = _present([d.face_id for d in new.values()], faces)
        result = MergeResult(source=str(src), target=str(target))
        result.undecided = sum(1 for _, v in table.rows if v.get("face_id", "").strip().lower() not in new)
        ordered = sorted(new.values(), key=lambda d: d.line)
        missing = [d for d in ordered if d.face_id not in known and d.face_id not in existing]
        if missing and not keep_missing:
            d = missing[0]
            more = f" (and {len(missing) - 1} more rows like it)" if len(missing) > 1 else ""
            raise ReviewError(f"{src}: line {d.line}: face_id {d.face_id} is not in {faces}{more}: a mistyped "
                              "id, or a queue older than the last detect run; clear those verdicts, or merge with "
                              "--keep-missing to record them as orphans (they apply again if the face returns)")
        to_add = []
        for d in ordered:
            old = existing.get(d.face_id)
            if old is not None:
                if old.false_positive != d.false_positive:
                    raise ReviewError(f"{src}: line {d.line}: face_id {d.face_id} has false_positive="
                                      f"{int(d.false_positive)} but {target} line {old.line} records "
                                      f"{int(old.false_positive)}; a recorded decision is changed only by editing "
                                      f"{target} by hand")
                result.already += 1
                continue
            to_add.append(replace(d, reviewer=d.reviewer or reviewer))
        if to_add:
            append_decisions(target, existing_table, to_add)
    result.added = len(to_add)
    result.added_fp = sum(d.false_positive for d in to_add)
    result.orphans = sum(d.face_id not in known for d in to_add)
    result.waiting = review_waiting()
    log.info("review: %s", result.message())
    return result
