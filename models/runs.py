"""Training runs on disk: one directory per run identity, so no run is ever destroyed by another.

A run's identity is a hash of what decides its weights: the model, loss and optimiser params,
the seed and the training data's fingerprint (sha256 over the dataset's rows, written by
tasks.artifacts.trainset). Everything else (steps, devices, threads, logging, checkpoint cadence)
may change between sessions of the same run: raising `loop.steps` resumes and extends it.

    <out>/runs/<identity>/run.json            the resolved RunConfig and the fingerprint
    <out>/runs/<identity>/checkpoints/...     models.checkpoint (step-N dirs + latest.json)
    <out>/runs/<identity>/plots.csv           one metrics row per log window
    <out>/runs/<identity>/last.json           the last window's losses (what summary.json reports)

Another param set or new data makes a new directory beside the old ones; the newest
`loop.keep_runs` run directories are kept (by last use), older ones are deleted, and nothing
else ever deletes one."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from tasks.fileio import atomic_copy, atomic_write_json
from tasks.params.train import RunConfig
from tasks.typed import to_dict

log = logging.getLogger(__name__)

RUNS = "runs"
IDENTITY_SECTIONS = ("model", "loss", "optim")


def identity_of(run: RunConfig, fingerprint: str) -> dict:
    """What a run's weights depend on (a checkpoint of another identity can never be resumed)."""
    return {**{s: to_dict(getattr(run, s)) for s in IDENTITY_SECTIONS}, "seed": run.loop.seed, "data": fingerprint}


def run_id(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def describe_change(old: dict, new: dict) -> str:
    """Which identity keys differ, for the log: 'optim.lr 0.0001 -> 0.0002, data'."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += [f"{key}.{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changes.append("the training data (fingerprint)" if key == "data" else f"{key} {a!r} -> {b!r}")
    return ", ".join(changes) or "nothing"


class RunDir:
    """The directory of one run identity under <out>/runs."""

    def __init__(self, out: str | os.PathLike, run: RunConfig, fingerprint: str):
        self.identity = identity_of(run, fingerprint)
        self.id = run_id(self.identity)
        self.root = Path(out) / RUNS
        self.path = self.root / self.id
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots.csv"
        self.last = self.path / "last.json"

    def others(self) -> list[Path]:
        """Other runs' directories, most recently used first."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir() if p.is_dir() and p.name != self.id and (p / "run.json").exists()]
        return sorted(dirs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)

    def previous_identity(self) -> dict | None:
        others = self.others()
        if not others:
            return None
        return json.loads((others[0] / "run.json").read_text()).get("identity")

    def open(self, run: RunConfig) -> None:
        """Create (or touch) the directory and record the config; newer sessions overwrite run.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "run.json", {"id": self.id, "identity": self.identity, "config": to_dict(run)})
        now = time.time()
        os.utime(self.path / "run.json", (now, now))

    def prune(self, keep: int) -> list[str]:
        """Delete the run directories beyond the `keep` most recently used (this one included)."""
        removed = []
        for old in self.others()[max(keep - 1, 0):]:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
        if removed:
            log.info("train: removed %d older run(s) beyond loop.keep_runs %d: %s", len(removed), keep,
                     ", ".join(removed))
        return removed


class PlotsLog:
    """plots.csv of a run: one row per log window; a resumed run cuts rows past its checkpoint."""

    def __init__(self, path: Path, fields: tuple[str, ...]):
        self.path, self.fields = path, ("step", *fields)

    def truncate(self, upto: int) -> None:
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= upto]
        self.write(rows, "w")

    def write(self, rows: list[dict], mode: str = "a") -> None:
        new = mode == "w" or not self.path.exists()
        with open(self.path, "w" if new else "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)

    def copy_to(self, dest: Path) -> None:
        """The run's plots as the stage's plots file (written atomically)."""
        atomic_copy(self.path, dest)
