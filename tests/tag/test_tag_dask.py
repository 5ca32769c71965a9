"""tag.runner: dask writes the same tags.parquet (byte for byte) as the local runner, on a 1-process Dask cluster."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from models.caffemodel import encode_net
from tasks.artifacts.tags import MGM_TAGS
from tasks.errors import ConfigError
from tasks.params.tag import TagConfig
from tasks.tag import dask_runner
from tasks.tag.run import tag_faces
from tasks.tools.convert import convert
from tasks.typed import build
from tests.support.tag import labelled_faces, png_bytes, synthetic_net, write_faces_dataset


def _cfg(out, **over) -> TagConfig:
    return build(TagConfig, {"backend": "color", "workers": 0, "threads": 1, "batch_size": 4,
                             "out": {"tags": str(out / "tags.parquet"), "summary": str(out / "summary.json"),
                                     "metrics": str(out / "metrics.json")}} | over, "tag")


@pytest.fixture(scope="module")
def faces(shared, tmp_path_factory):
    """12 labelled crops in 3 shards of 4; 3 with detector colours (not measured)."""
    from tasks.artifacts.faces import read_faces

    picked = labelled_faces(shared)[::17][:12]  # several characters
    items = [(hashlib.sha256(p.encode()).hexdigest(), png_bytes(p)) for p, _ in picked]
    colors = {items[k][0]: ((250, 225, 140), (50, 100, 220)) for k in (1, 6, 10)}
    path, crops = write_faces_dataset(tmp_path_factory.mktemp("faces"), items, colors=colors, shard_rows=4)
    return read_faces(path), str(crops)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    c = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address=None)
    yield c
    c.close()


def _both(tmp_path, faces, cluster, monkeypatch, **over):
    # chunks of one batch (4 faces), 2 in flight on the one worker thread: several chunks, a batch
    # that straddles two shards (as the local runner's batches do), results reordered
    monkeypatch.setattr(dask_runner, "CHUNK_FACES", 4)
    local = _cfg(tmp_path / "local", **over)
    s_local = tag_faces(local, *faces)
    cfg = _cfg(tmp_path / "dask", runner="dask", dask_address=cluster.scheduler_address, **over)
    s_dask = tag_faces(cfg, *faces)
    a, b = pq.read_table(local.out.tags), pq.read_table(cfg.out.tags)
    assert a.num_rows == 12 and a.to_pylist() == b.to_pylist()
    assert a.column("face_id").to_pylist() == sorted(faces[0].column("face_id").to_pylist())
    # the same bytes: same rows in face_id order, and no runner, address or worker count in the metadata
    assert hashlib.sha256(open(local.out.tags, "rb").read()).digest() == hashlib.sha256(open(cfg.out.tags, "rb").read()).digest()
    assert open(local.out.summary, "rb").read() == open(cfg.out.summary, "rb").read()
    assert s_dask.tagged == s_local.tagged == 12 and s_dask.notes == s_local.notes
    assert s_dask.known == s_local.known and s_dask.positive == s_local.positive
    assert s_dask.weights_sha256 == s_local.weights_sha256
    return s_dask


def test_dask_runner_matches_local_color(tmp_path, faces, cluster, monkeypatch):
    s = _both(tmp_path, faces, cluster, monkeypatch)
    assert "measured on the crop" in s.notes[0] and s.known["blonde_hair"] >= 3


def test_dask_runner_matches_local_i2v(tmp_path, faces, cluster, monkeypatch):
    """A synthetic i2v net: bit-identical probabilities (same batches, same torch threads)."""
    names = [n.replace("_", " ") for n in MGM_TAGS[:20]] + ["1girl"]
    (tmp_path / "m.caffemodel").write_bytes(encode_net(synthetic_net(seed=3, num_tags=len(names))))
    (tmp_path / "tags.json").write_text(json.dumps(names))
    convert(tmp_path / "m.caffemodel", tmp_path / "tag.safetensors", "tag", tags=tmp_path / "tags.json",
            tag_list_out=tmp_path / "tag_list.json")
    i2v = {"weights": str(tmp_path / "tag.safetensors"), "tag_list": str(tmp_path / "tag_list.json")}
    s = _both(tmp_path, faces, cluster, monkeypatch, backend="i2v", batch_size=5, raw_top_k=3, i2v=i2v)
    assert s.backend == "i2v" and s.known["long_hair"] == 12


def test_plan_chunks_are_made_of_the_local_batches(tmp_path, shared):
    from tasks.artifacts.faces import read_faces
    from tasks.taggers.loader import plan_batches

    picked = labelled_faces(shared)[:10]
    items = [(f"f{9 - i}", png_bytes(p)) for i, (p, _) in enumerate(picked)]  # ids against the shard order
    faces_path, crops = write_faces_dataset(tmp_path, items, colors={"f4": ((1, 2, 3), (4, 5, 6))}, shard_rows=4)
    faces = read_faces(faces_path)
    cfg = _cfg(tmp_path, batch_size=2)
    ids = [c.column("face_id").to_pylist() for c in dask_runner.plan_chunks(faces, "color", cfg, 4)]
    # detector colours first (no crop read), then the measured faces shard by shard (ids sorted), in the
    # local batches of 2: the batch [f5, f0] starts in shard 1 and ends in shard 2, as it does locally
    assert ids == [["f4"], ["f6", "f7", "f8", "f9"], ["f2", "f3", "f5", "f0"], ["f1"]]
    chunks = dask_runner.plan_chunks(faces, "i2v", cfg, 4)
    assert [c.column("face_id").to_pylist() for c in chunks] == [["f6", "f7", "f8", "f9"], ["f2", "f3", "f4", "f5"], ["f0", "f1"]]
    local = [[f for _, f in b] for b in plan_batches(faces, 2)]
    assert [b for c in chunks for b in _cut2(c.column("face_id").to_pylist())] == local
    assert all(len(set(c.column("shard").to_pylist())) == 1 for c in chunks)
    assert [len(c) for c in dask_runner.plan_chunks(faces, "onnx", cfg, 2)] == [2] * 5
    assert dask_runner.chunk_size(cfg, 5) == 4 and dask_runner.chunk_size(_cfg(tmp_path, batch_size=8), 5) == 8


def _cut2(ids):
    return [ids[i:i + 2] for i in range(0, len(ids), 2)]


def test_config_rejects_bad_dask_address():
    for bad in ("scheduler:8786", "tcp://scheduler", "tcp://scheduler:99999", "http://scheduler:8786", "tcp://a b:1"):
        with pytest.raises(ConfigError, match="tag.dask_address: expected tcp://host:port"):
            build(TagConfig, {"runner": "dask", "dask_address": bad}, "tag")
    for good in ("tcp://scheduler:8786", "tcp://10.0.0.5:8786", "tcp://[::1]:8786", None):
        assert build(TagConfig, {"runner": "dask", "dask_address": good}, "tag").dask_address == good
    with pytest.raises(ConfigError, match="tag.runner"):
        build(TagConfig, {"runner": "processes"}, "tag")
