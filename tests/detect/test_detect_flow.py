"""`python -m flows.detect` end to end through Prefect (ephemeral), on a few real images."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tasks.artifacts.faces import read_faces
from tests.conftest import ROOT
from tests.support.detect import CASCADE, REAL, write_manifest


def test_flow_cli(tmp_path):
    files = [REAL / n for n in ("afdr_detect_07.jpg", "s2p_16.png", "s2p_test_1.png")]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    write_manifest(tmp_path / "manifest.parquet", files + [tmp_path / "bad.png"], tmp_path)
    out = tmp_path / "faces"
    params = tmp_path / "params.yaml"
    params.write_text(textwrap.dedent(f"""\
        detect:
          cascade: {CASCADE}
          workers: 2
          out: {{crops: {out}/crops, faces: {out}/faces.parquet, images: {out}/images.parquet,
                 detector: {out}/detector.json, contact_sheet: {out}/sheet.png, summary: {out}/summary.json,
                 metrics: {out}/metrics.json}}
        """))
    r = subprocess.run([sys.executable, "-m", "tasks.detect", "--params", str(params),
                        "--manifest", str(tmp_path / "manifest.parquet"), "--images", str(tmp_path),
                        "--boxes", str(tmp_path / "boxes.parquet")], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "unusable images: 1 (unreadable 1)" in r.stderr  # the summary reaches the log
    assert "\r" not in r.stderr  # stderr is no terminal: no progress bar, a log of lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["bad"] == {"unreadable": 1} and summary["kept"] >= 2
    assert read_faces(out / "faces.parquet").num_rows == summary["faces"]
    assert json.loads((out / "metrics.json").read_text()) == {"images": 4, "faces": summary["faces"], "kept": summary["kept"]}
    assert (out / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spec = json.loads((out / "detector.json").read_text())  # what render and release read of detect's settings
    assert spec["settings"]["cascade"] == str(CASCADE) and spec["settings"]["detector"] == "lbpcascade"
    assert len(spec["cascade_sha256"]) == 64 and "workers" not in spec["settings"]
