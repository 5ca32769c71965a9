"""Benchmark the tag stage: faces/s of the whole stage (crop shards → decode workers → forward →
Parquet) against a bare forward pass on preloaded tensors with the same batch, in the same run.

    .venv/bin/python bench/tag.py [--faces 64] [--batch 16] [--device cpu|cuda] [--workers N]

The network is the published Illustration2Vec tag architecture (I2V_TAG_ARCH) with random
weights, stored in the converted safetensors format, so the stage takes its real i2v path;
the crops are the shared test faces (cycled), 128-px PNGs as the detect stage stores them.
Goal: ratio >= 0.8 (decoding and I/O must not dominate)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from models.convert import FORMAT  # noqa: E402
from models.illust2vec import I2V_TAG_ARCH, MEAN_BGR, Illust2Vec, specs_json  # noqa: E402
from tasks.config import build  # noqa: E402
from tasks.detect.dataset import read_faces  # noqa: E402
from tasks.tag.backends import I2VBackend  # noqa: E402
from tasks.tag.config import TagConfig  # noqa: E402
from tasks.tag.run import tag_faces  # noqa: E402
from tests.tag_helpers import png_bytes, write_faces_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data" / "faces"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tag-"))

    model = Illust2Vec(I2V_TAG_ARCH)
    weights = tmp / "i2v_tag.safetensors"
    meta = {"format": FORMAT, "kind": "tag", "output": "conv6_4", "layers": specs_json(model.net.specs),
            "mean_bgr": json.dumps(list(MEAN_BGR)), "source": "random", "source_sha256": ""}
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(weights),
              metadata={f"moeflow.{k}": v for k, v in meta.items()})
    (tmp / "tag_list.json").write_text(json.dumps([f"tag {i}" for i in range(1539)]))

    srcs = sorted(Path(args.shared).glob("*.png")) + sorted(Path(args.shared).glob("*.jpg"))
    items = [(f"{i:064x}", png_bytes(str(srcs[i % len(srcs)]), 128)) for i in range(args.faces)]
    faces_path, crops = write_faces_dataset(tmp / "faces", items, shard_rows=2048)
    faces = read_faces(faces_path)
    cfg = build(TagConfig, {"backend": "i2v", "device": args.device, "batch_size": args.batch, "workers": args.workers,
                            "threads": args.threads,
                            "i2v": {"weights": str(weights), "tag_list": str(tmp / "tag_list.json")},
                            "out": {"tags": str(tmp / "tags.parquet"), "summary": str(tmp / "summary.json")}}, "tag")

    backend = I2VBackend(cfg)  # same device, threads, channels_last, autocast as the stage
    x = torch.randint(0, 256, (args.batch, 3, 224, 224), dtype=torch.uint8)
    backend.forward(x)  # warm-up (allocations, cuDNN / oneDNN algorithm choice)
    if backend.device == "cuda":
        x = x.pin_memory()
    n_batches = max(1, args.faces // args.batch)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        backend.forward(x)
    if backend.device == "cuda":
        torch.cuda.synchronize()
    bare = n_batches * args.batch / (time.perf_counter() - t0)

    summary = tag_faces(cfg, faces, str(crops))
    stage = summary.tagged / summary.seconds
    print(f"device {backend.device}, threads {torch.get_num_threads()}, batch {args.batch}, faces {args.faces}, "
          f"workers {cfg.workers if cfg.workers is not None else 'default'}")
    print(f"bare forward (preloaded tensors): {bare:.2f} faces/s")
    print(f"tag stage (shards -> decode -> forward -> parquet): {stage:.2f} faces/s")
    print(f"ratio stage / bare: {stage / bare:.2f} (goal >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
