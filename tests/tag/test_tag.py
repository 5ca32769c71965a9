"""The tag stage: backends, the Parquet contract, reviewed faces only, missing-weights messages."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models.caffemodel import encode_net
from tasks.artifacts.decisions import load_decisions
from tasks.artifacts.faces import read_faces
from tasks.artifacts.reviewed import write_reviewed
from tasks.artifacts.tagger import read_tagger_spec
from tasks.artifacts.tags import HAIR_COLORS, MGM_TAGS, TAGS_TABLE, TAGS_VERSION, binarize
from tasks.errors import ConfigError, DataError
from tasks.params import read_yaml
from tasks.params.tag import TagConfig
from tasks.tag.run import run_tag, tag_faces
from tasks.taggers.colors import ColorNamer, ciede2000, srgb_to_lab
from tasks.tools.convert import convert
from tasks.typed import build, to_dict
from tests.conftest import ROOT, deep_update
from tests.support.review import select_reviewed
from tests.support.tag import CANONICAL_HAIR, labelled_faces, png_bytes, synthetic_net, write_faces_dataset

torch.set_num_threads(1)


def fid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass(frozen=True)
class Stage:
    """The tag stage's config and the paths dvc.yaml would hand it."""

    cfg: TagConfig
    faces: str  # the reviewed faces (the review stage's table)
    crops: str


def make_stage(tmp_path: Path, faces: Path, crops: Path, tag: dict | None = None, decisions: str = "") -> Stage:
    """The repo's tag section with outputs in a tmp dir, and the reviewed faces the review stage
    would pass on for these `decisions`. The tagger paths stay at their defaults (relative): run
    from a tmp cwd (the `in_tmp` fixture) for them to be absent."""
    dec = tmp_path / "false_positives.csv"
    dec.write_text("face_id,false_positive,reviewer,note\n" + decisions, encoding="utf-8")
    reviewed, verdicts = select_reviewed(read_faces(faces), load_decisions(dec)[1], "keep")
    write_reviewed(tmp_path / "reviewed.parquet", reviewed, verdicts)
    section = deep_update(read_yaml(ROOT / "params.yaml")["tag"], deep_update(
        {"workers": 0, "threads": 1, "batch_size": 8,
         "out": {k: str(tmp_path / "tags" / f) for k, f in (("tags", "tags.parquet"), ("tagger", "tagger.json"),
                                                             ("summary", "summary.json"), ("metrics", "metrics.json"))}},
        tag or {}))
    return Stage(build(TagConfig, section, "tag"), str(tmp_path / "reviewed.parquet"), str(crops))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """cwd = tmp_path: the default tagger paths (models/i2v/..., models/wd-tagger/...) are absent there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def labelled(shared, tmp_path_factory):
    """The 200 character-labelled crops as a lbpcascade-style faces dataset (no detector colours)."""
    root = tmp_path_factory.mktemp("labelled")
    items, chars = [], {}
    for path, char in labelled_faces(shared):
        f = fid(path)
        items.append((f, png_bytes(path)))
        chars[f] = char
    faces, crops = write_faces_dataset(root, items)
    return root, faces, crops, chars


@pytest.fixture(scope="module")
def i2v_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("i2v")
    names = [n.replace("_", " ") for n in MGM_TAGS[:20]] + ["1girl", "solo", "hatsune miku"]
    net = synthetic_net(seed=11, num_tags=len(names), feature=True, feature_dim=4096)
    (d / "m.caffemodel").write_bytes(encode_net(net))
    (d / "tags.json").write_text(json.dumps(names))
    convert(d / "m.caffemodel", d / "tag.safetensors", "tag", tags=d / "tags.json", tag_list_out=d / "tag_list.json")
    convert(d / "m.caffemodel", d / "feat.safetensors", "feature")
    return {"weights": str(d / "tag.safetensors"), "tag_list": str(d / "tag_list.json"), "feature_weights": str(d / "feat.safetensors")}


# --- colours --------------------------------------------------------------------------------------

def test_lab_reference_values():
    np.testing.assert_allclose(srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(srgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.05)
    namer = ColorNamer({"red": [(210, 50, 50)], "blue": [(60, 100, 200)]}, HAIR_COLORS)
    p = namer.probabilities([(200, 40, 40)])
    assert namer.name([(200, 40, 40)]) == ["red"] and p[0, HAIR_COLORS.index("red")] > 0.99
    assert p[0, HAIR_COLORS.index("blonde")] == 0  # names without prototypes never win
    # CIEDE2000 against test data of Sharma, Wu & Dalal (2005)
    pairs = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, 3.1571, -77.2803), (50, 0, -82.7485), 2.8615),
             ((50, 2.8361, -74.0200), (50, 0, -82.7485), 3.4412), ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0),
             ((50, 0, 0), (50, -1, 2), 2.3669), ((50, -1, 2), (50, 0, 0), 2.3669),
             ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
             ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373)]
    lab1, lab2, want = (np.array(v, np.float64) for v in zip(*pairs))
    np.testing.assert_allclose(ciede2000(lab1, lab2), want, atol=1e-4)


def test_hair_color_is_the_dominant_non_skin_tone():
    """Brown hair drawn with a shadow band and a highlight streak over a skin face: the base tone, named brown."""
    from types import SimpleNamespace

    from tasks.taggers.colors import hair_color

    img = np.zeros((100, 100, 3))
    img[:] = (130, 80, 50)  # base tone
    img[10:20] = (60, 35, 25)  # shadow
    img[25:30, 30:70] = (235, 170, 110)  # highlight
    img[40:, 25:75] = (250, 220, 200)  # face skin
    box = SimpleNamespace(x=25, y=40, width=50, height=50)
    hair = hair_color(img, box, sample=(235, 170, 110), skin=(250, 220, 200))
    assert hair == (130, 80, 50)
    namer = ColorNamer(build(TagConfig, {}, "tag").color.hair_palette, HAIR_COLORS, lightness_weight=1.5)
    assert namer.name([hair, (60, 35, 25)]) == ["brown", "brown"]


def test_color_backend_agrees_with_canonical_hair(tmp_path, labelled):
    _, faces, crops, chars = labelled
    cfg = build(TagConfig, {"backend": "color", "workers": 1, "out": {"tags": str(tmp_path / "t.parquet"), "summary": str(tmp_path / "s.json"),
                                                                      "metrics": str(tmp_path / "m.json")}}, "tag")
    from tasks.artifacts.faces import read_faces

    summary = tag_faces(cfg, read_faces(faces), str(crops))
    t = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert len(t) == 200 and summary.backend == "color"
    hits, per = 0, Counter()
    known = [r for r in t if r["attributes"][0] != -1]
    for r in known:
        hair = HAIR_COLORS[int(np.argmax(r["attributes"][:len(HAIR_COLORS)]))]
        ok = hair in CANONICAL_HAIR[chars[r["face_id"]]]
        hits += ok
        per[chars[r["face_id"]]] += ok
    assert len(known) >= 120, f"animeface measured only {len(known)} of 200 crops"
    assert hits / len(known) >= 0.70, f"{hits}/{len(known)} agree; per character: {dict(per)}"
    for r in t:  # the colour backend says nothing about the other tags
        assert r["long_hair"] is None and r["glasses"] is None and r["attributes"][13:24] == [-1] * 11


# --- i2v: schema, metadata, features, raw tags ---------------------------------------------------------

def test_i2v_schema_and_metadata(tmp_path, labelled, i2v_files):
    _, faces, crops, _ = labelled
    from tasks.artifacts.faces import read_faces

    few = read_faces(faces).slice(0, 10)
    cfg = build(TagConfig, {"backend": "i2v", "workers": 1, "threads": 1, "batch_size": 4, "raw_top_k": 3, "feature": True,
                            "i2v": i2v_files, "out": {"tags": str(tmp_path / "t.parquet"), "summary": str(tmp_path / "s.json"),
                                                      "metrics": str(tmp_path / "m.json")}}, "tag")
    summary = tag_faces(cfg, few, str(crops))
    table = pq.read_table(tmp_path / "t.parquet")
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["moeflow.table"] == TAGS_TABLE and meta["moeflow.schema_version"] == str(TAGS_VERSION)
    assert json.loads(meta["moeflow.tag_order"]) == list(MGM_TAGS)
    assert meta["moeflow.backend"] == "i2v" and meta["moeflow.backend_reason"] == "set in params (tag.backend: i2v)"
    sha = {k: hashlib.sha256(Path(v).read_bytes()).hexdigest() for k, v in i2v_files.items()}
    assert meta["moeflow.weights_sha256"] == sha["weights"]
    # what decides the values, files by content; no path, thread count, batch size, workers, device or runner
    assert json.loads(meta["moeflow.params"]) == {
        "backend": "i2v", "threshold": 0.25, "thresholds": {}, "raw_top_k": 3, "feature": True, "precision": "float32",
        "i2v": {"weights_sha256": sha["weights"], "tag_list_sha256": sha["tag_list"],
                "feature_weights_sha256": sha["feature_weights"], "tags": dict(sorted(cfg.i2v.tags.items()))}}
    assert str(tmp_path) not in table.schema.metadata[b"moeflow.params"].decode()
    assert table.schema.names == ["face_id", "backend", *MGM_TAGS, "attributes", "raw_top", "feature"]
    assert all(table.schema.field(t).type == "float" for t in MGM_TAGS)
    att_type = table.schema.field("attributes").type
    assert att_type.list_size == 34 and att_type.value_type == "int8"
    rows = table.to_pylist()
    assert [r["face_id"] for r in rows] == sorted(few.column("face_id").to_pylist())  # canonical order
    for r in rows:
        assert r["backend"] == "i2v" and len(r["raw_top"]) == 3 and len(r["feature"]) == 4096
        assert r["pink_hair"] is not None and r["ponytail"] is not None
        assert r["glasses"] is None and r["blue_eyes"] is None  # not in this tagger's list: null, -1
        att = r["attributes"]
        assert sum(att[:13]) == 1 and att[MGM_TAGS.index("glasses")] == -1
        assert att[MGM_TAGS.index("smile")] == int(r["smile"] >= 0.25)
    s = json.loads((tmp_path / "s.json").read_text())
    assert summary.tagged == 10 and s["backend"] == "i2v" and s["backend_reason"] == "set in params (tag.backend: i2v)"
    assert s["weights_sha256"] == sha["weights"]


def test_binarize_groups_and_thresholds():
    cfg = build(TagConfig, {"thresholds": {"glasses": 0.6}}, "tag")
    p = np.full((2, 34), np.nan, np.float32)
    p[0, :13] = np.linspace(0.1, 0.9, 13)[::-1]
    p[0, MGM_TAGS.index("smile")] = 0.25
    p[0, MGM_TAGS.index("glasses")] = 0.5
    a = binarize(p, cfg)
    assert a[0, 0] == 1 and a[0, 1:13].sum() == 0
    assert a[0, MGM_TAGS.index("smile")] == 1 and a[0, MGM_TAGS.index("glasses")] == 0
    assert (a[1] == -1).all() and (a[0, 24:] == -1).all()


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="tag.i2v.tags: unknown MGM tag 'cat_ears'"):
        build(TagConfig, {"i2v": {"tags": {"cat_ears": "cat ears"}}}, "tag")
    with pytest.raises(ConfigError, match=r"tag.color.hair_palette.red: expected \[r, g, b\]"):
        build(TagConfig, {"color": {"hair_palette": {"red": [[300, 0, 0]]}}}, "tag")
    with pytest.raises(ConfigError, match="tag.backend"):
        build(TagConfig, {"backend": "clip"}, "tag")


# --- backend choice, missing files --------------------------------------------------------------------

def test_missing_weights_name_the_key_the_file_and_the_fix(tmp_path, labelled, in_tmp):
    _, faces, crops, _ = labelled
    st = make_stage(tmp_path, faces, crops, {"backend": "i2v"})
    with pytest.raises(DataError) as e:
        run_tag(st.cfg, st.faces, st.crops)
    msg = str(e.value)
    assert msg.startswith("tag.i2v.weights: models/i2v/illust2vec_tag.safetensors not found")
    assert "python -m tasks.tools.convert tag" in msg and "dvc import-url https://github.com/rezoo/illustration2vec" in msg
    st = make_stage(tmp_path, faces, crops, {"backend": "onnx"})
    with pytest.raises(DataError, match=r"^tag\.onnx\.model: models/wd-tagger/model\.onnx not found.*selected_tags\.csv"):
        run_tag(st.cfg, st.faces, st.crops)
    assert not Path(st.cfg.out.tags).exists() and not Path(st.cfg.out.tagger).exists()


def test_only_reviewed_kept_faces_are_tagged(tmp_path, labelled, caplog, in_tmp):
    _, _, _, chars = labelled
    root = tmp_path / "faces"
    pngs = [(f"kept{i}", i) for i in range(4)] + [("dropped", 4), ("false_positive", 5)]
    sample = sorted(chars)[:6]
    from tasks.artifacts.faces import CropReader, read_faces

    src = CropReader(read_faces(labelled[1]), labelled[2])
    items = [(fid(name), src.read(sample[k])) for name, k in pngs]
    faces, crops = write_faces_dataset(root, items, drop={fid("dropped"): "duplicate"},
                                       colors={fid("kept0"): ((250, 225, 140), (50, 100, 220))})
    st = make_stage(tmp_path, faces, crops, {"color": {"measure": False}},
                    decisions=f"{fid('false_positive')},1,test,not a face\n{fid('kept1')},0,test,\n")
    with caplog.at_level(logging.INFO, logger="tasks"):
        summary = run_tag(st.cfg, st.faces, st.crops)
    assert "backend color (auto: no tagger weights" in caplog.text
    rows = {r["face_id"]: r for r in pq.read_table(st.cfg.out.tags).to_pylist()}
    assert set(rows) == {fid(f"kept{i}") for i in range(4)}
    assert rows[fid("kept0")]["attributes"][HAIR_COLORS.index("blonde")] == 1
    assert rows[fid("kept0")]["attributes"][MGM_TAGS.index("blue_eyes")] == 1
    assert rows[fid("kept2")]["attributes"] == [-1] * 34  # no colours measured (measure: false)
    assert summary.faces_in == 4 and summary.tagged == 4


# --- onnx --------------------------------------------------------------------------------------------

def _tiny_wd_tagger(d: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    w = (rng.normal(size=(3, len(names))) / 100).astype(np.float32)
    b = rng.normal(size=len(names)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["m", "W"], ["z"]), helper.make_node("Add", ["z", "B"], ["l"]),
         helper.make_node("Sigmoid", ["l"], ["output"])],
        "wd", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(names)])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(d / "model.onnx"))
    (d / "selected_tags.csv").write_text("tag_id,name,category,count\n" + "".join(
        f"{i},{n},{0 if n != 'general' else 9},{100 - i}\n" for i, n in enumerate(names)), encoding="utf-8")
    return w, b


def test_onnx_backend_maps_the_tagger_tags(tmp_path, labelled, in_tmp):
    pytest.importorskip("onnxruntime")
    _, faces, crops, _ = labelled
    names = ["general", "sensitive", "long_hair", "blonde_hair", "smile", "blue_eyes", "red_eyes", "1girl"]
    w, b = _tiny_wd_tagger(tmp_path, names)
    from tasks.artifacts.faces import CropReader, read_faces
    from tasks.taggers.loader import decode_resize

    few = read_faces(faces).slice(0, 6)
    cfg = build(TagConfig, {"backend": "auto", "workers": 1, "threads": 1, "raw_top_k": 2,
                            "onnx": {"model": str(tmp_path / "model.onnx"), "tags_csv": str(tmp_path / "selected_tags.csv")},
                            "out": {"tags": str(tmp_path / "t.parquet"), "summary": str(tmp_path / "s.json"),
                                    "metrics": str(tmp_path / "m.json")}}, "tag")
    summary = tag_faces(cfg, few, str(crops))
    assert summary.backend == "onnx" and summary.reason == "auto: the onnx tagger is present (no Illustration2Vec weights)"
    reader = CropReader(few, crops)
    for r in pq.read_table(tmp_path / "t.parquet").to_pylist():
        x = decode_resize(reader.read(r["face_id"]), 32, 255, "bicubic").numpy().astype(np.float32)[::-1]  # BGR
        want = 1 / (1 + np.exp(-(x.mean((1, 2)) @ w + b)))
        for tag in ("long_hair", "blonde_hair", "smile", "blue_eyes", "red_eyes"):
            assert r[tag] == pytest.approx(want[names.index(tag)], rel=1e-4)
        assert r["brown_hair"] is None and r["glasses"] is None
        assert [t["tag"] for t in r["raw_top"]] == [names[i] for i in np.argsort(-want)[:2]]
        assert r["attributes"][HAIR_COLORS.index("blonde")] == 1  # the only hair colour it knows


# --- the stage's entry point ---------------------------------------------------------------------------

def test_stage_entry_point_writes_tags_summary_and_run_report(tmp_path, labelled):
    """`python -m tasks.tag --params FILE` (what dvc.yaml runs): tags, the metric without timings,
    the timings in the untracked run report, the MGM prior column with its source in the log."""
    _, _, _, chars = labelled
    from tasks.artifacts.faces import CropReader, read_faces

    src = CropReader(read_faces(labelled[1]), labelled[2])
    sample = sorted(chars)[:3]
    faces, crops = write_faces_dataset(tmp_path / "f", [(s, src.read(s)) for s in sample])
    st = make_stage(tmp_path, faces, crops, {"backend": "color", "workers": 1})
    pfile = tmp_path / "params.yaml"
    import yaml

    pfile.write_text(yaml.safe_dump({"tag": to_dict(st.cfg)}), encoding="utf-8")  # the stage reads its section only
    run = tmp_path / "run"
    run.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "tasks.tag", "--params", str(pfile), "--faces", st.faces,
                          "--crops", st.crops], cwd=run, env=env, capture_output=True, text=True, timeout=240)
    log_text = res.stdout + res.stderr
    assert res.returncode == 0, log_text[-3000:]
    assert "backend color (set in params (tag.backend: color))" in log_text
    assert "\r" not in log_text  # stderr is no terminal: no progress bar, a log of lines
    assert "long_hair" in log_text and "0.5299" in log_text and "makegirlsmoe_web src/Config.js @154fdcf" in log_text
    assert pq.read_table(st.cfg.out.tags).num_rows == 3
    spec, reason = read_tagger_spec(st.cfg.out.tagger)  # what render reads samples back with
    assert spec.backend == "color" and reason == "set in params (tag.backend: color)" and spec.color == st.cfg.color
    s = json.loads(Path(st.cfg.out.summary).read_text())
    assert s["tagged"] == 3 and s["backend"] == "color" and s["backend_reason"] == "set in params (tag.backend: color)"
    m = json.loads(Path(st.cfg.out.metrics).read_text())  # the DVC metric; per tag: the summary
    assert m == {"faces": 3, "coverage": pytest.approx(sum(s["coverage"].values()) / len(MGM_TAGS), abs=1e-3)}
    assert not {"faces_per_second", "seconds", "mgm_published"} & set(s)  # a metric holds what the tags are
    report = json.loads((run / "reports" / "runs" / "tag.json").read_text())
    assert report["stage"] == "tag" and report["faces"] == 3 and report["faces_per_second"] > 0
    assert report["workers"] == 1 and report["batch_size"] == 8
    assert "Backend: `color`" in (run / "reports" / "runs" / "tag.md").read_text()
