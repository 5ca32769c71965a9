"""Benchmark the tag stage against a baseline measured in the same run (interleaved rounds, medians).

    .venv/bin/python bench/tag.py color [--faces 8000] [--rounds 3] [--bare-faces 800] [--workers N]
    .venv/bin/python bench/tag.py i2v [--faces 64] [--batch 16] [--device cpu|cuda] [--workers N]

color (what the demo runs, no tagger weights offline): the real face crops of ../shared
(data/faces_train, data/faces and the faces lbpcascade finds in data/real; cycled to --faces),
as 128-px PNG crops in 2,048-face shards with no detector colours, so every face is measured with
animeface. Stage = tag_faces (shards → measuring workers → Parquet in face_id order); baseline =
the bare measurement loop in one process (shard read + measure_colors per crop) on the first
--bare-faces crops. Prints the stage's seconds and faces/s and its ratio to the bare loop (goal:
>= 0.8 × the number of measuring processes, i.e. the workers add no overhead; and the stage
within ~2-3 minutes for 8,000 crops on 2 cores).

i2v: the published Illustration2Vec tag architecture (I2V_TAG_ARCH) with random weights in the
converted safetensors format, so the stage takes its real i2v path, on the shared faces (cycled)
as 128-px PNG crops. Baseline = a bare forward pass on preloaded tensors with the same batch.
Goal: ratio >= 0.8 (decoding and I/O must not dominate)."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import torch  # noqa: E402

from tasks.artifacts.faces import read_faces, read_shard  # noqa: E402
from tasks.params.tag import TagConfig  # noqa: E402
from tasks.tag.run import tag_faces  # noqa: E402
from tasks.typed import build  # noqa: E402
from tests.support.tag import png_bytes, write_faces_dataset  # noqa: E402

SHARED = ROOT.parent / "shared"


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def real_crops(size: int = 128) -> list[bytes]:
    """Every real face crop of ../shared at `size` px: the two crop folders, then the faces
    lbpcascade finds in the illustrations (1.5x box, shifted inside the image, as detect cuts them)."""
    from PIL import Image

    from tasks.detect.geometry import cut, enlarge, place, resize
    from tasks.detectors import LbpCascade, read_cascade

    data = SHARED / "data"
    out = [_png(resize(np.asarray(Image.open(p).convert("RGB")), size))
           for p in sorted((data / "faces_train").iterdir()) + sorted((data / "faces").iterdir())]
    casc = LbpCascade(read_cascade(SHARED / "models" / "lbpcascade_animeface.xml")[0], 1.1, 5, 24)
    for p in sorted((data / "real").iterdir()):
        rgb = np.asarray(Image.open(p).convert("RGB"))
        for d in casc.detect(rgb):
            box = place(enlarge(d.x, d.y, d.w, d.h, 1.5), rgb.shape[1], rgb.shape[0], "shift")
            if box is not None:
                out.append(_png(resize(cut(rgb, box), size)))
    return out


def bench_color(args, tmp: Path) -> int:
    from functools import partial

    from tasks.taggers.colors import measure_colors
    from tasks.taggers.loader import default_workers

    t = time.perf_counter()
    crops = real_crops()
    items = [(hashlib.sha256(f"{i}".encode()).hexdigest(), crops[i % len(crops)]) for i in range(args.faces)]
    faces_path, crops_dir = write_faces_dataset(tmp / "faces", items, shard_rows=2048)
    faces = read_faces(faces_path)
    print(f"{len(crops)} real crops -> {args.faces} faces in {time.perf_counter() - t:.0f} s")
    cfg = build(TagConfig, {"backend": "color", "workers": args.workers,
                            "out": {"tags": str(tmp / "tags.parquet"), "summary": str(tmp / "summary.json"),
                                    "metrics": str(tmp / "metrics.json")}}, "tag")
    procs = default_workers("cpu", args.workers, args.faces, kind="measure") or 1
    measure = partial(measure_colors, refine_delta_e=cfg.color.refine_delta_e)
    first = faces.slice(0, args.bare_faces)
    shards = sorted(set(first.column("shard").to_pylist()))

    def bare() -> float:
        t0 = time.perf_counter()
        n = 0
        for s in shards:
            pngs = read_shard(crops_dir / s)
            for fid in first.filter(pc.equal(first.column("shard"), s)).column("face_id").to_pylist():
                measure(pngs[fid])
                n += 1
        return n / (time.perf_counter() - t0)

    stage_fps, bare_fps, stage_s = [], [], []
    for r in range(args.rounds):
        bare_fps.append(bare())
        s = tag_faces(cfg, faces, str(crops_dir))
        stage_fps.append(s.tagged / s.seconds)
        stage_s.append(s.seconds)
        print(f"round {r + 1}: stage {s.seconds:.1f} s = {stage_fps[-1]:.1f} faces/s, bare loop {bare_fps[-1]:.1f} faces/s")
    st, ba = statistics.median(stage_fps), statistics.median(bare_fps)
    print(f"colour backend, {args.faces} faces, {procs} measuring process(es), {args.rounds} rounds (medians)")
    print(f"tag stage: {statistics.median(stage_s):.1f} s, {st:.1f} faces/s")
    print(f"bare measurement loop (1 process): {ba:.1f} faces/s")
    print(f"ratio stage / bare: {st / ba:.2f} (goal >= {0.8 * procs:.1f}: 0.8 x {procs} processes)")
    return 0


def bench_i2v(args, tmp: Path) -> int:
    from safetensors.torch import save_file

    from models.illust2vec import FORMAT, I2V_TAG_ARCH, MEAN_BGR, Illust2Vec, specs_json
    from tasks.taggers.backends import I2VBackend

    model = Illust2Vec(I2V_TAG_ARCH)
    weights = tmp / "i2v_tag.safetensors"
    meta = {"format": FORMAT, "kind": "tag", "output": "conv6_4", "layers": specs_json(model.net.specs),
            "mean_bgr": json.dumps(list(MEAN_BGR)), "source": "random", "source_sha256": ""}
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(weights),
              metadata={f"moeflow.{k}": v for k, v in meta.items()})
    (tmp / "tag_list.json").write_text(json.dumps([f"tag {i}" for i in range(1539)]))
    src = SHARED / "data" / "faces"
    srcs = sorted(src.glob("*.png")) + sorted(src.glob("*.jpg"))
    items = [(f"{i:064x}", png_bytes(str(srcs[i % len(srcs)]), 128)) for i in range(args.faces)]
    faces_path, crops = write_faces_dataset(tmp / "faces", items, shard_rows=2048)
    faces = read_faces(faces_path)
    cfg = build(TagConfig, {"backend": "i2v", "device": args.device, "batch_size": args.batch, "workers": args.workers,
                            "threads": args.threads,
                            "i2v": {"weights": str(weights), "tag_list": str(tmp / "tag_list.json")},
                            "out": {"tags": str(tmp / "tags.parquet"), "summary": str(tmp / "summary.json"),
                                    "metrics": str(tmp / "metrics.json")}}, "tag")
    backend = I2VBackend(cfg)  # same device, threads, channels_last, autocast as the stage
    x = torch.randint(0, 256, (args.batch, 3, 224, 224), dtype=torch.uint8)
    backend.forward(x)  # warm-up (allocations, cuDNN / oneDNN algorithm choice)
    if backend.device == "cuda":
        x = x.pin_memory()
    n_batches = max(1, args.faces // args.batch)
    bare_fps, stage_fps = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(n_batches):
            backend.forward(x)
        if backend.device == "cuda":
            torch.cuda.synchronize()
        bare_fps.append(n_batches * args.batch / (time.perf_counter() - t0))
        s = tag_faces(cfg, faces, str(crops))
        stage_fps.append(s.tagged / s.seconds)
    bare, stage = statistics.median(bare_fps), statistics.median(stage_fps)
    print(f"device {backend.device}, threads {torch.get_num_threads()}, batch {args.batch}, faces {args.faces}, "
          f"workers {cfg.workers if cfg.workers is not None else 'default'}, {args.rounds} rounds (medians)")
    print(f"bare forward (preloaded tensors): {bare:.2f} faces/s")
    print(f"tag stage (shards -> decode -> forward -> parquet): {stage:.2f} faces/s")
    print(f"ratio stage / bare: {stage / bare:.2f} (goal >= 0.8)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backend", nargs="?", default="color", choices=["color", "i2v"])
    ap.add_argument("--faces", type=int, default=None, help="faces to tag (color: 8000, i2v: 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bare-faces", type=int, default=800, help="color: crops the bare loop measures per round")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    args.faces = args.faces or (8000 if args.backend == "color" else 64)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-tag-") as d:
        return (bench_color if args.backend == "color" else bench_i2v)(args, Path(d))


if __name__ == "__main__":
    sys.exit(main())
