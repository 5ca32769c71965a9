"""Training bytes do not depend on the machine's load (issue 21, item 9): `loop.threads: 0` is
every core this process may use, never the cores idle at the start (float sums, and so the
weights, depend on the thread count). Trained under an artificial CPU load and without one: the
same generator, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from models.device import busy_cores, choose_threads, cores
from models.training_loop import GENERATOR, train
from tasks.artifacts.faces import read_faces
from tasks.train.export import export_training_data
from tests.support.train import make_faces, tiny_run

pytestmark = pytest.mark.skipif(cores() < 2, reason="one core: every thread count is 1")


@pytest.fixture
def cpu_load():
    """One busy process (`yes`) per core of ours, until the test ends."""
    procs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(cores())]
    try:
        assert busy_cores(1.0) >= 1  # the load is real
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.fixture
def torch_threads():
    """The trainer sets torch's thread count for the process: give the next tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(shared, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    f = make_faces(shared, root, n=32)
    out = root / "train_faces.parquet"
    export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], out)
    return out


def generator_bytes(data: Path, out: Path, threads: int) -> tuple[bytes, int]:
    summary = train(tiny_run(data, out, steps=3, threads=threads))
    return (out / GENERATOR).read_bytes(), summary["threads"]


def test_auto_threads_are_every_core_whatever_the_load(cpu_load):
    assert choose_threads(0) == cores()
    assert choose_threads(0, processes=2) == max(1, cores() // 2)
    assert choose_threads(1) == 1 and choose_threads(3) == 3


def test_training_under_load_gives_the_bytes_of_an_idle_machine(data, tmp_path, torch_threads, request):
    every_core, _ = generator_bytes(data, tmp_path / "explicit", cores())  # the thread count written out
    one, _ = generator_bytes(data, tmp_path / "one", 1)
    assert one != every_core  # the thread count does change the bytes: this test can tell
    request.getfixturevalue("cpu_load")
    loaded, threads = generator_bytes(data, tmp_path / "loaded", 0)
    assert threads == cores() and loaded == every_core


def test_training_without_load_gives_the_same_bytes(data, tmp_path, torch_threads):
    idle, threads = generator_bytes(data, tmp_path / "idle", 0)
    assert threads == cores()
    assert idle == generator_bytes(data, tmp_path / "explicit", cores())[0]
