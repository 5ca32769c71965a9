"""The contact sheet's template, script and style are package data: an installed moeflow (a
wheel, not this checkout) carries them, and renders queue.html from them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHEET = ("tasks/review/sheet/queue.html", "tasks/review/sheet/queue.js", "tasks/review/sheet/queue.css")


def test_wheel_carries_the_sheet_and_renders_from_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("flows", "tasks", "models"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = next((tmp_path / "dist").glob("moeflow-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert set(SHEET) <= names, sorted(n for n in names if n.startswith("tasks/review/"))
        z.extractall(tmp_path / "site")
    r = subprocess.run([sys.executable, "-I", str(ROOT / "tests/support/installed_sheet.py"), str(tmp_path / "site")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "moeflowPart" in r.stdout and "--size: 96px" in r.stdout
