"""detect's state saves deltas (the rows changed since the last save) during a run and compacts
once at its end: a save costs a shard's rows, not the whole state's, and a run killed at any
point (before its last checkpoint, between a delta's two files, between a compaction and the
deletion of the deltas) resumes to the very bytes of a clean run (real illustrations)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import tasks.detect.run as detect_run
import tasks.detect.state as detect_state
from tasks.detect.run import detect
from tasks.detect.state import DELTA_PREFIX, State
from tests.support.detect import REAL, config, tree, write_manifest


class Killed(Exception):
    pass


def _kill_after(n: int):
    real = detect_run.iter_results

    def iterate(*args, **kwargs):
        for i, res in enumerate(real(*args, **kwargs)):
            if i == n:
                raise Killed
            yield res
    return iterate


def _no_last_checkpoint(monkeypatch):
    """The process dies before its `finally`: the last checkpoint (the compaction) never runs."""
    real = State.checkpoint

    def checkpoint(self, final=False):
        if not final:
            real(self)
    monkeypatch.setattr(State, "checkpoint", checkpoint)


@pytest.mark.parametrize("kill", ["before_the_last_checkpoint", "between_a_deltas_two_files",
                                  "between_compaction_and_deletion"])
def test_a_killed_run_resumes_to_the_clean_runs_bytes(tmp_path, monkeypatch, kill):
    files = sorted(REAL.iterdir())[:10]
    write_manifest(tmp_path / "m.parquet", files, tmp_path)
    clean = config(tmp_path / "clean", shard_rows=3, workers=2)
    detect(clean, tmp_path / "m.parquet", tmp_path, progress=False)
    assert not list(Path(clean.out.crops).glob(f"{DELTA_PREFIX}*"))  # a clean end leaves no delta

    cfg = config(tmp_path / "resumed", shard_rows=3, workers=1)
    crops = Path(cfg.out.crops)
    with monkeypatch.context() as m:
        _no_last_checkpoint(m)
        m.setattr(detect_run, "iter_results", _kill_after(6))
        with pytest.raises(Killed):
            detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    deltas = sorted(crops.glob(f"{DELTA_PREFIX}*"))
    assert len(deltas) >= 2 and not (crops / "state-faces.parquet").exists()
    if kill == "between_a_deltas_two_files":
        deltas[-1].unlink()  # sorted: the last delta's images file
    elif kill == "between_compaction_and_deletion":
        aside = tmp_path / "aside"
        aside.mkdir()
        for p in deltas:
            shutil.copy2(p, aside / p.name)
        State(crops, "unused-key", set(), 3)  # loads the deltas, compacts (another key: every row superseded)
        for p in deltas:
            shutil.copy2(aside / p.name, p)  # back: they no longer match the tables
        State(crops, "unused-key", set(), 3)  # a run with nothing to do deletes them all the same
        assert not list(crops.glob(f"{DELTA_PREFIX}*"))
        for p in deltas:
            shutil.copy2(aside / p.name, p)
    summary = detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    assert summary.processed + summary.reused == 10
    want, got = tree(tmp_path / "clean"), tree(tmp_path / "resumed")
    assert sorted(got) == sorted(want)
    assert [n for n in want if want[n] != got[n]] == []


def test_a_save_writes_the_rows_it_changed_not_the_whole_state(tmp_path, monkeypatch):
    files = sorted(REAL.iterdir())[:10]
    write_manifest(tmp_path / "m.parquet", files, tmp_path)
    written: list[tuple[str, int]] = []
    real = detect_state.write_parquet

    def write_parquet(path, rows, schema):
        t = real(path, rows, schema)
        written.append((Path(path).name, t.num_rows if isinstance(t, pa.Table) else len(rows)))
        return t
    monkeypatch.setattr(detect_state, "write_parquet", write_parquet)
    cfg = config(tmp_path / "out", shard_rows=1, workers=1)
    detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    whole = [n for name, n in written if name == "state-faces.parquet"]
    deltas = [n for name, n in written if name.startswith(DELTA_PREFIX) and name.endswith("-faces.parquet")]
    assert len(whole) == 1 and len(deltas) >= 5  # one compaction at the end, a delta per full shard
    assert sum(deltas) == whole[0] and max(deltas) < whole[0]  # each face saved once, in its shard's delta
