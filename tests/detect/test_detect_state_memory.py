"""detect's state keeps its saved rows columnar (Arrow, outside Python's heap): the Python objects
it holds are the rows changed since the last save and the open shard's, bounded by `shard_rows`,
not one dict per image and per face (issue: every stage's peak memory a fixed cache, not a
function of the number of images). Python's allocations (tracemalloc; Arrow's buffers are not
Python's) per row of the state must stay far below a dict per row (~1 KB a face)."""

from __future__ import annotations

import gc
import hashlib
import io
import tracemalloc

import pyarrow as pa
from PIL import Image

from tasks.artifacts.faces import face_id
from tasks.detect.run import decide
from tasks.detect.state import State
from tasks.detect.work import FaceResult, ImageResult
from tests.support.detect import config

SHARD_ROWS = 64
FACES_PER_IMAGE = 3


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 90)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


def _ids(n: int) -> list[str]:
    return [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(n)]


def _result(image_id: str) -> ImageResult:
    faces = []
    for k in range(FACES_PER_IMAGE):
        crop = (10 * k, 0, 10 * k + 100, 100)
        f = FaceResult(face_id(image_id, "lbpcascade", crop), (10 * k + 10, 10, 80, 80), crop, 0.5, None,
                       chroma=20.0, phash=int(image_id[:15], 16) + k, png=PNG)
        if k == FACES_PER_IMAGE - 1:
            f.drop_reason, f.png, f.phash, f.chroma = "too_small", None, None, None
        faces.append(f)
    return ImageResult(image_id, "ok", width=640, height=480, faces=faces)


def _python_bytes(run) -> int:
    """Python's allocations that `run()` leaves behind (what it returns included)."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = run()  # alive while measured
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
        del kept
        return current
    finally:
        tracemalloc.stop()


def _fill(crops, ids: list[str]) -> State:
    state = State(crops, "key", pa.array(ids, pa.string()), SHARD_ROWS)
    for image_id in ids:
        state.add(_result(image_id), "lbpcascade", 128)
    state.checkpoint(final=True)
    return state


def test_a_run_holds_a_bounded_number_of_rows_as_python_objects(tmp_path):
    """Adding images: the saved rows leave Python's heap; what stays grows with shard_rows, not with N."""
    small, large = _ids(300), _ids(1500)
    _fill(tmp_path / "warm", _ids(100))  # the first run's imports and caches are not the state's
    held = {}
    for name, ids in (("small", small), ("large", large)):
        held[name] = _python_bytes(lambda name=name, ids=ids: _fill(tmp_path / name, ids))
    per_image = (held["large"] - held["small"]) / (len(large) - len(small))
    assert per_image < 64, (held, per_image)  # one dict per image and per face: ~3 KB an image here


def test_loading_a_saved_state_makes_no_python_object_per_row(tmp_path):
    """A rerun loads the state, knows what is done and builds the faces table: columnar throughout."""
    ids = _ids(1500)
    _fill(tmp_path / "crops", ids)
    manifest_ids = pa.array(ids, pa.string())
    cfg = config(tmp_path / "out")

    def load():
        state = State(tmp_path / "crops", "key", manifest_ids, SHARD_ROWS)
        done = state.image_ids(final=True)
        faces = decide(state.faces_table(), cfg)
        return state, done, faces

    state, done, faces = load()  # and the first load's imports and caches are not the state's
    assert len(done) == len(ids) and faces.num_rows == len(ids) * FACES_PER_IMAGE
    rows = len(ids) * (1 + FACES_PER_IMAGE)
    held = _python_bytes(load)
    assert held / rows < 32, (held, rows)  # a dict a row: ~1 KB a face
