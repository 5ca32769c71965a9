"""Benchmark our DRAGAN training step against a plain fp32 eager implementation of the same
model and loss, in the same run, on faces from ../shared/data/faces.

    python bench/train.py                       # CPU: a small model (64 px, 4 blocks, batch 16)
    python bench/train.py --paper --compile     # GPU: the paper's model (128 px, 16 blocks, batch 64)

Ours: the training loop's step (uint8 cache on the device, flips / noise / tags drawn on the
device, bf16 autocast + channels_last + fused Adam on CUDA, optional torch.compile, no host
sync). Plain: fp32, contiguous tensors, a DataLoader decoding PNGs with a horizontal-flip
transform, conditioning drawn with numpy on the host, per-parameter Adam, .item() on every
loss. Prints steps/s, images/s and the ratio (goals: >= 2x on GPU, >= 1x on CPU) and, on GPU,
the model FLOPs utilisation (FLOPs counted by torch.utils.flop_counter)."""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import loss as L  # noqa: E402
from models.config import LoopConfig, LossConfig, ModelConfig, OptimConfig, RunConfig  # noqa: E402
from models.data import read_export  # noqa: E402
from models.dragan import Discriminator, Generator  # noqa: E402
from models.training_loop import Trainer  # noqa: E402
from models.conditioning import tag_frequencies  # noqa: E402
from tasks.detect.dataset import read_faces  # noqa: E402
from tasks.train.export import export_training_data  # noqa: E402
from tests.train_helpers import make_faces  # noqa: E402

log = logging.getLogger("bench.train")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step_factory(run: RunConfig, device: torch.device):
    """A straightforward fp32 eager step of the same model and loss."""
    from PIL import Image

    _, pngs, attrs = read_export(run.data)
    size = run.model.image_size
    freqs = tag_frequencies(attrs)
    torch.manual_seed(run.loop.seed)
    G, D = Generator(run.model).to(device), Discriminator(run.model).to(device)
    o = run.optim
    opt_g = torch.optim.Adam(G.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), foreach=False)

    class Faces(torch.utils.data.Dataset):
        def __len__(self):
            return len(pngs)

        def __getitem__(self, i):
            im = Image.open(io.BytesIO(pngs[i])).convert("RGB").resize((size, size), Image.BICUBIC)
            if np.random.rand() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(im, np.float32) / 127.5 - 1).permute(2, 0, 1)
            a = torch.from_numpy(attrs[i].astype(np.float32))
            return x, a.clamp_min(0), (a >= 0).float()

    loader = torch.utils.data.DataLoader(Faces(), batch_size=o.batch, shuffle=True, drop_last=True, num_workers=0)
    rng = np.random.default_rng(run.loop.seed)

    def sample_tags(n):
        c = np.zeros((n, run.model.n_tags), np.float32)
        for s, _, p in freqs["groups"]:
            c[np.arange(n), s + rng.choice(len(p), n, p=np.asarray(p) / np.sum(p))] = 1
        for j, p in freqs["independent"].items():
            c[:, int(j)] = rng.random(n) < p
        return torch.from_numpy(c)

    it = iter(loader)

    def step():
        nonlocal it
        try:
            real, tags, known = next(it)
        except StopIteration:
            it = iter(loader)
            real, tags, known = next(it)
        real, tags, known = real.to(device), tags.to(device), known.to(device)
        z = torch.randn(real.shape[0], run.model.z_dim).to(device)
        c = sample_tags(real.shape[0]).to(device)
        u = torch.rand(real.shape).to(device)
        fake = G(z, c)
        ld, _ = L.discriminator_loss(D, real, fake, tags, known, u, run.loss)
        opt_d.zero_grad()
        ld.backward()
        opt_d.step()
        lg, _ = L.generator_loss(D, fake, c, run.loss)
        opt_g.zero_grad()
        lg.backward()
        opt_g.step()
        return ld.item(), lg.item()  # what a plain loop logs every step

    return step


def measure(step, device, warmup: int, steps: int) -> float:
    for i in range(warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync(device)
    return steps / (time.perf_counter() - t0)


def count_flops(trainer: Trainer) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            trainer.train_step(0)
        return float(fc.get_total_flops())
    except Exception as e:  # noqa: BLE001 - MFU is a bonus
        log.warning("could not count FLOPs: %s", e)
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="the paper's model: 128 px, 16 blocks, batch 64")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--g-blocks", type=int, default=4)
    ap.add_argument("--g-channels", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--faces", type=int, default=512, help="faces from ../shared/data/faces in the export")
    ap.add_argument("--compile", action="store_true", help="torch.compile ours (CUDA)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU (H100/H200: 989)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "train.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.paper:
        model = ModelConfig()
        batch = 64
    else:
        chans = (16, 32, 64, 128, 256)[: max(1, int(np.log2(args.image_size)) - 2)]
        model = ModelConfig(image_size=args.image_size, g_channels=args.g_channels, g_blocks=args.g_blocks,
                            d_channels=chans, d_blocks=1)
        batch = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f = make_faces(ROOT.parent / "shared", tmp, n=args.faces)
        export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], tmp / "export.parquet")
        run = RunConfig(data=str(tmp / "export.parquet"), out=str(tmp / "run"), model=model, loss=LossConfig(),
                        optim=OptimConfig(batch=batch),
                        loop=LoopConfig(steps=10**9, device=args.device, compile=args.compile, progress=False))
        trainer = Trainer(run)
        device = trainer.device
        plain = plain_step_factory(run, device)
        ours_sps = measure(trainer.train_step, device, args.warmup + (5 if args.compile else 0), args.steps)
        plain_sps = measure(lambda i: plain(), device, args.warmup, args.steps)
        flops = count_flops(trainer) if device.type == "cuda" else None
    res = {"date": datetime.date.today().isoformat(), "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "model": {"image_size": model.image_size, "g_blocks": model.g_blocks,
                                                        "g_channels": model.g_channels, "d_channels": model.d_channels},
           "batch": batch, "steps": args.steps, "compile": args.compile, "bf16": trainer.amp,
           "ours": {"steps_per_s": round(ours_sps, 3), "images_per_s": round(ours_sps * batch, 1)},
           "plain": {"steps_per_s": round(plain_sps, 3), "images_per_s": round(plain_sps * batch, 1)},
           "ratio": round(ours_sps / plain_sps, 3)}
    if flops:
        res["flops_per_step"] = flops
        res["mfu"] = round(flops * ours_sps / (args.peak_tflops * 1e12), 4)
    goal = 2.0 if device.type == "cuda" else 1.0
    print(f"device {res['device_name']}, {model.image_size} px, {model.g_blocks} blocks, batch {batch}")
    print(f"ours : {res['ours']['steps_per_s']:8.3f} steps/s  {res['ours']['images_per_s']:9.1f} images/s")
    print(f"plain: {res['plain']['steps_per_s']:8.3f} steps/s  {res['plain']['images_per_s']:9.1f} images/s")
    print(f"ratio: {res['ratio']:.2f}x (goal >= {goal:g}x)" + (f", MFU {res['mfu']:.1%}" if "mfu" in res else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
