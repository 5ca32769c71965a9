"""animeface (nvxs) on real illustrations. Guards the known trap: animeface 2.0.3 silently
returns no faces with Pillow 13 — this test fails if detection silently stops."""

from __future__ import annotations

import PIL
import pytest
from PIL import Image

from tasks.artifacts.faces import read_faces
from tasks.detect.run import detect
from tasks.detectors import AnimeFace, check_animeface
from tests.support.detect import REAL, config, write_manifest

SMALL = ["s2p_25.png", "s2p_29.png", "s2p_test_19.jpg", "renpy_sylvie_blue_smile.png"]


def test_animeface_detects_on_real_illustrations():
    det = AnimeFace()
    found = 0
    for name in SMALL:
        im = Image.open(REAL / name).convert("RGB")
        faces = det.detect(None, im)
        found += bool(faces)
        for f in faces:
            assert 0 < f.score <= 1 and f.w > 0
            assert all(len(c) == 3 for c in (f.hair, f.eye, f.skin))
    assert found == len(SMALL), f"animeface found faces in only {found} of {len(SMALL)} (Pillow {PIL.__version__})"


def test_animeface_stage_keeps_colours(tmp_path):
    files = [REAL / n for n in SMALL[:2]]
    write_manifest(tmp_path / "m.parquet", files, tmp_path)
    cfg = config(tmp_path / "out", detector="animeface", workers=1, min_face=40)
    summary = detect(cfg, tmp_path / "m.parquet", tmp_path, progress=False)
    rows = read_faces(cfg.out.faces).to_pylist()
    assert summary.with_face == 2
    assert all(r["detector"] == "animeface" and len(r["hair_rgb"]) == 3 and len(r["eye_rgb"]) == 3
               and len(r["skin_rgb"]) == 3 and 0 < r["score"] <= 1 for r in rows)


def test_pillow_pin():
    assert PIL.__version__.startswith("10."), "animeface 2.0.3 is verified with Pillow 10.4 only"
    check_animeface()


def test_known_bad_pillow_refused(monkeypatch):
    from tasks.errors import ConfigError

    monkeypatch.setattr(PIL, "__version__", "13.0.0")
    with pytest.raises(ConfigError, match="Pillow 13"):
        check_animeface()
