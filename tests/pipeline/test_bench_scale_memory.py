"""bench/scale.py's memory lines: the growth per more image and the verdict against the goal
(peak RSS <= 2 GB at 64 k images), from the base and the largest run (never the control run)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(n: int, rss: dict[str, float], control: bool = False) -> dict:
    return {"n": n, "control": control, "stages": {s: {"max_rss_mb": mb} for s, mb in rss.items()}}


def test_memory_lines_project_the_growth_and_judge_the_goal():
    sys.path.insert(0, str(BENCH))
    try:
        from scale import memory_lines
    finally:
        sys.path.remove(str(BENCH))
    base = _run(1000, {"flat": 300, "steep": 300})
    top = _run(16000, {"flat": 315, "steep": 900})  # +1 KB and +40 KB an image
    lines = memory_lines(base, [top])
    flat, steep = (next(line for line in lines if f" {s} " in line) for s in ("flat", "steep"))
    assert "+1.0 KB/image" in flat and "64k  0.36 GB" in flat and "1M  1.30 GB" in flat and flat.endswith(" met")
    assert "+40.0 KB/image" in steep and "64k  2.82 GB" in steep and steep.endswith("NOT met")
    assert memory_lines(base, []) == []
