"""Benchmark: our DRAGAN training step (models.training_loop.Trainer.train_step) against a plain
fp32 eager step of the same model and loss, measured in the same run on real faces from ../shared.

    .venv/bin/python bench/train.py                     # CPU: the demo model (32 px, batch 64)
    .venv/bin/python bench/train.py --compile           # + torch.compile: compile time, break-even
    python bench/train.py --paper [--compile]           # GPU: the paper's model (128 px), MFU

Ours: the loop's step (uint8 faces cached on the device, flips / noise / tags drawn there, fused
Adam, bf16 autocast + channels_last where the device gains, no host sync). Plain: fp32,
contiguous tensors, a DataLoader decoding the images with a flip transform, tags sampled with
numpy on the host, per-parameter Adam, `.item()` on both losses every step.

On CPU every variant is measured with 1 thread and with every core: ours as the loop runs it
(bf16 + channels_last when the CPU has native bf16), ours in fp32 (contiguous), plain fp32.
`--rounds` rounds interleave the variants (the order rotates each round) and the median of the
rounds is reported, with the spread; the machine's load is printed before and after. Goals:
ours / plain >= 1x on CPU, >= 2x on GPU. `--paper` adds the model FLOPs utilisation (FLOPs of one
step counted by torch.utils.flop_counter, peak from the GPU's name or --peak-tflops)."""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import loss as L  # noqa: E402
from models.conditioning import tag_frequencies  # noqa: E402
from models.device import busy_cores, choose_threads, cores  # noqa: E402
from models.dragan import Discriminator, Generator  # noqa: E402
from models.training_loop import Trainer  # noqa: E402
from tasks.artifacts.trainset import (  # noqa: E402
    read_export,  # noqa: E402
    split_of,
    write_dataset,
)
from tasks.params.train import LoopConfig, ModelConfig, OptimConfig, RunConfig, RunOut  # noqa: E402
from tasks.tools.paper_run import DEFAULT_FACES, DEMO_SIZES, collect, peak_tflops, step_flops  # noqa: E402
from tests.support.train import random_attributes  # noqa: E402

log = logging.getLogger("bench.train")
RUN_MINUTES = 10  # the compile verdict: does it pay on a run this long (the demo's train stage)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step_factory(run: RunConfig, device: torch.device):
    """A straightforward fp32 eager step of the same model and loss."""
    from PIL import Image

    export = read_export(run.data).take("train")
    size, attrs = run.model.image_size, export.attributes
    freqs = tag_frequencies(attrs)
    mask = torch.from_numpy((attrs >= 0).any(0).astype(np.float32)).to(device)
    torch.manual_seed(run.loop.seed)
    G, D = Generator(run.model).to(device), Discriminator(run.model).to(device)
    o = run.optim
    opt_g = torch.optim.Adam(G.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), foreach=False)

    class Faces(torch.utils.data.Dataset):
        def __len__(self):
            return len(export.pngs)

        def __getitem__(self, i):
            im = Image.open(io.BytesIO(export.pngs[i])).convert("RGB").resize((size, size), Image.BICUBIC)
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

    def step(_i: int):
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
        lg, _ = L.generator_loss(D, fake, c, run.loss, mask)
        opt_g.zero_grad()
        lg.backward()
        opt_g.step()
        return ld.item(), lg.item()  # what a plain loop logs every step

    return step


class Variant:
    """One configuration: a step function, a thread count, its per-round steps/s."""

    def __init__(self, name: str, step, threads: int | None, device: torch.device):
        self.name, self.step, self.threads, self.device = name, step, threads, device
        self.i, self.rates = 0, []

    def measure(self, warmup: int, steps: int) -> float:
        if self.threads:
            torch.set_num_threads(self.threads)
        for _ in range(warmup):
            self.step(self.i)
            self.i += 1
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step(self.i)
            self.i += 1
        sync(self.device)
        rate = steps / (time.perf_counter() - t0)
        self.rates.append(rate)
        return rate

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def make_dataset(path: Path, n: int) -> None:
    ids, images, _ = collect([str(ROOT / p) for p in DEFAULT_FACES], n)
    write_dataset(path, ids, images, random_attributes(len(ids)).tolist(), [split_of(i, 0.0) for i in ids])


def compile_trial(run: RunConfig, threads: int | None) -> dict:
    """torch.compile on a fresh inductor cache: the first step's extra time, then the steady rate."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")  # a cold compile
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    trainer = Trainer(replace(run, out=run.out + "-compiled", loop=replace(run.loop, compile=True)))
    v = Variant(f"ours, torch.compile, {threads or 'GPU'} thread(s)", trainer.train_step, threads, trainer.device)
    for _ in range(3):  # the first steps compile (and recompile for D's second signature)
        v.step(v.i)
        v.i += 1
    sync(trainer.device)
    first = time.perf_counter() - t0
    return {"variant": v, "first_3_steps_s": first}


def verdict(eager_sps: float, compiled_sps: float, compile_s: float, minutes: float = RUN_MINUTES) -> dict:
    t = minutes * 60
    eager_steps, compiled_steps = t * eager_sps, max(0.0, t - compile_s) * compiled_sps
    gain = compiled_steps / eager_steps - 1
    even = compile_s / (1 - eager_sps / compiled_sps) if compiled_sps > eager_sps else None
    return {"compile_s": round(compile_s, 1), "speedup_steady": round(compiled_sps / eager_sps, 3),
            f"steps_in_{minutes:g}_min_eager": int(eager_steps), f"steps_in_{minutes:g}_min_compiled": int(compiled_steps),
            "gain": round(gain, 3), "break_even_s": round(even, 1) if even else None, "pays": gain > 0}


def load_line() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="the paper's model: 128 px, 16 blocks, batch 64 (GPU)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each timing")
    ap.add_argument("--faces", type=int, default=1024, help="faces from ../shared in the dataset")
    ap.add_argument("--compile", action="store_true", help="also torch.compile ours: compile time and break-even")
    ap.add_argument("--compile-threads", type=int, default=0, help="threads of the compiled run (0 = the loop's auto)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, help="bf16 dense peak for MFU (default: from the GPU's name)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "train.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    model = ModelConfig() if args.paper else ModelConfig(**DEMO_SIZES)
    n_cores = cores()
    before = {"loadavg": os.getloadavg(), "busy_cores": round(busy_cores(1.0), 2)}
    auto = choose_threads(0)  # what the loop's threads: 0 picks on this machine (every core)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "faces.parquet", args.faces)
        run = RunConfig(out=RunOut(data=str(tmp / "faces.parquet"), dir=str(tmp / "run")), model=model,
                        optim=OptimConfig(batch=args.batch),
                        loop=LoopConfig(steps=10**9, device=args.device, progress=False, threads=n_cores))
        ours = Trainer(run)
        device = ours.device
        cpu = device.type == "cpu"
        fp32 = Trainer(replace(run, out=run.out + "-fp32", loop=replace(run.loop, amp="none", channels_last="off")))
        plain = plain_step_factory(run, device)
        label = "bf16 + channels_last" if ours.amp else "fp32 (no native bf16)"
        thread_counts = sorted({1, n_cores}) if cpu else [None]
        variants = []
        for th in thread_counts:
            suffix = f", {th} thread{'s' if th > 1 else ''}" if th else ""
            variants += [Variant(f"ours, {label}{suffix}", ours.train_step, th, device),
                         Variant(f"ours, fp32{suffix}", fp32.train_step, th, device),
                         Variant(f"plain fp32 eager{suffix}", plain, th, device)]
        c_threads = (args.compile_threads or auto) if cpu else None
        trial = compile_trial(run, c_threads) if args.compile else None
        if trial:
            variants.append(trial["variant"])
        for r in range(args.rounds):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                v.measure(args.warmup if r else args.warmup + 1, args.steps)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v.rates[-1]:.2f}" for v in variants)
                  + f" steps/s ({load_line()})", file=sys.stderr)
        flops = step_flops(model, run.loss, args.batch, device)
    after = {"loadavg": os.getloadavg(), "busy_cores_now": round(busy_cores(1.0), 2)}

    rows = {v.name: {"threads": v.threads, "steps_per_s": round(v.median, 3), "images_per_s": round(v.median * args.batch, 1),
                     "min": round(min(v.rates), 3), "max": round(max(v.rates), 3), "rounds": [round(x, 3) for x in v.rates]}
            for v in variants}
    top = thread_counts[-1]
    at = thread_counts.index(auto) if cpu else 0  # the headline: the thread count the loop would pick
    head, base = variants[3 * at], variants[3 * at + 2]
    res = {"date": datetime.date.today().isoformat(), "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "cores": n_cores, "auto_threads": auto if cpu else None, "bf16": ours.amp,
           "model": {k: getattr(model, k) for k in DEMO_SIZES}, "batch": args.batch, "steps": args.steps,
           "rounds": args.rounds, "load_before": before, "load_after": after, "variants": rows,
           "ratio": round(head.median / base.median, 3), "flops_per_step": flops,
           "achieved_tflops": round(flops * head.median / 1e12, 4)}
    for i, th in enumerate(thread_counts):
        o, f, p = variants[3 * i: 3 * i + 3]
        res[f"ratios_{th or 'gpu'}"] = {"ours_vs_plain": round(o.median / p.median, 3),
                                         "ours_vs_fp32": round(o.median / f.median, 3),
                                         "fp32_vs_plain": round(f.median / p.median, 3)}
    if cpu and len(thread_counts) > 1:
        res["threads_all_vs_1"] = round(variants[3 * (len(thread_counts) - 1)].median / variants[0].median, 3)
    peak, note = peak_tflops(device, args.peak_tflops)
    if peak:
        res["mfu"] = round(flops * head.median / (peak * 1e12), 4)
    res["peak"] = note
    if trial:
        cv = trial["variant"]
        eager = next(v for v in variants if v.step == ours.train_step and v.threads == cv.threads)
        compile_s = max(0.0, trial["first_3_steps_s"] - 3 / cv.median)
        res["compile"] = {"threads": cv.threads, **verdict(eager.median, cv.median, compile_s)}

    goal = 2.0 if device.type == "cuda" else 1.0
    print(f"train benchmark: {res['device_name']}, {model.image_size} px, g {model.g_channels}x{model.g_blocks}, "
          f"d {list(model.d_channels)}x{model.d_blocks}, batch {args.batch}; median of {args.rounds} interleaved rounds "
          f"of {args.steps} steps; {n_cores} cores")
    print(f"load before: {before['loadavg'][0]:.2f} (1 min avg), other processes busy on {before['busy_cores']} cores; "
          f"after: {after['loadavg'][0]:.2f}, {after['busy_cores_now']} busy")
    print(f"{'variant':48s} {'steps/s':>8s} {'img/s':>8s} {'min-max steps/s':>16s}")
    for name, r in rows.items():
        print(f"{name:48s} {r['steps_per_s']:8.3f} {r['images_per_s']:8.1f} {r['min']:7.3f}-{r['max']:<8.3f}")
    for th in thread_counts:
        q = res[f"ratios_{th or 'gpu'}"]
        print(f"{th or 'GPU'} thread(s): ours / plain fp32 {q['ours_vs_plain']:.2f}x, ours / ours fp32 "
              f"{q['ours_vs_fp32']:.2f}x, ours fp32 / plain {q['fp32_vs_plain']:.2f}x")
    if "threads_all_vs_1" in res:
        print(f"ours, {top} threads / 1 thread: {res['threads_all_vs_1']:.2f}x; the loop's auto threads at the start: "
              f"{auto}")
    print(f"ratio: {res['ratio']:.2f}x ours / plain fp32 eager at {head.threads or 'GPU'} thread(s), the loop's choice "
          f"(goal >= {goal:g}x); {flops / 1e9:.1f} GFLOP/step, "
          f"{res['achieved_tflops'] * 1e3:.1f} GFLOP/s" + (f", MFU {res['mfu']:.1%}" if "mfu" in res else f" ({note})"))
    if trial:
        c = res["compile"]
        print(f"torch.compile ({c['threads'] or 'GPU'} thread(s)): {c['compile_s']} s to compile (cold cache), then "
              f"{c['speedup_steady']:.2f}x the eager step; in a "
              f"{RUN_MINUTES}-minute run {c[f'steps_in_{RUN_MINUTES}_min_compiled']} steps vs "
              f"{c[f'steps_in_{RUN_MINUTES}_min_eager']} eager: " + ("pays" if c["pays"] else "does not pay")
              + (f" (break-even after {c['break_even_s']} s)" if c["break_even_s"] else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
