"""`python -m tasks.scrape` (the DVC stage command) end to end: success and a user error."""

import subprocess
import sys
import textwrap

import pyarrow.parquet as pq

from tests.conftest import ROOT, SHARED


def run_cli(params_file):
    return subprocess.run([sys.executable, "-m", "tasks.scrape", "--params", str(params_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def test_flow_cli_folder_source_and_source_error(tmp_path):
    out = tmp_path / "raw"
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent(f"""\
        scrape:
          source: folder
          folder: {SHARED / "data" / "real"}
          out: {{images: {out}/images, manifest: {out}/manifest.parquet, rejected: {out}/rejected.parquet, summary: {out}/summary.json,
                metrics: {out}/metrics.json}}
        """))
    r = run_cli(good)
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(rows) == 45  # 46 illustrations, one smaller than min_width 256
    assert "kept: 45 new, 45 in total" in r.stderr  # the stage summary reaches the log
    assert pq.read_table(out / "rejected.parquet").column("reason").to_pylist() == ["too_small"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace(str(SHARED / "data" / "real"), str(tmp_path / "missing")))
    r = run_cli(bad)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"error: scrape.folder: {tmp_path / 'missing'} is not a directory" in r.stderr
