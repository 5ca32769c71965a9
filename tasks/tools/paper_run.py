"""Paper scale in one command: train the 128-px Make.Girls.Moe model on a folder of face crops
for a fixed wall-clock budget, render it and measure it, everything in one folder.

    bash scripts/gpu_paper.sh [OUT] [options]           # a GPU box: 8 minutes of training
    python -m tasks.tools.paper_run --cpu-smoke          # the same path on a CPU, 32 px, 1 minute

It reuses the pipeline's parts, not a copy of them: the taggers the tag stage runs (tasks.taggers)
and its binarisation, the training dataset's writer (tasks.artifacts.trainset), the training loop
(models.training_loop) and the render stage's sheets and metrics (tasks.render); what it adds is
taking a folder of face crops as they are (no detection, no review) and a wall-clock budget.

1. **dataset** (`OUT/faces.parquet`, the train stage's table, read by models.data): every image
   the `--faces` globs match (default: the 7,800 96-px crops in ../shared), face_id = sha256 of
   the file, the file's own bytes (JPEG stays JPEG: ~43 MB for the 7,800, so the folder fits a
   64 MiB carry), the 34 attributes read by the tag stage's backend (`tag.backend`: colours with
   animeface unless Illustration2Vec / ONNX files are present) on the face enlarged to
   `detect.size`, binarised like the tag stage, and the split by face_id hash (`train.holdout`).
   Built once: a later run reuses it while the same images and tagger would make it.
2. **train** (`OUT/train/`): params.yaml's recipe (loss, optim, preset) with the paper's network
   sizes (tasks.params.train.ModelConfig defaults), batch 64, bf16 autocast on CUDA, optionally
   torch.compile, for `--minutes` (the run resumes if OUT/train holds it; `--fresh` starts over).
3. **render** (`OUT/samples/grid.png` and the other sheets) and the render stage's metrics
   (detectability, diversity, memorisation, attribute agreement: tasks.render.run.evaluate),
   plus images/s and the model FLOPs utilisation, in `OUT/metrics.json`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import hashlib
import io
import json
import logging
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from models import loss as L
from models.device import cores
from models.dragan import Discriminator, Generator
from models.training_loop import GENERATOR, Trainer, TrainingError
from tasks.artifacts.tags import MGM_TAGS, binarize
from tasks.artifacts.trainset import (
    EXPORT_TABLE,
    EXPORT_VERSION,
    FINGERPRINT_KEY,
    HOLDOUT,
    TAGGER_KEY,
    decode,
    split_of,
    write_dataset,
)
from tasks.errors import DataError, one_line_errors
from tasks.fileio import atomic_write_json, read_parquet
from tasks.params import DEFAULT_PARAMS
from tasks.params.all import load_params
from tasks.params.render import RenderOut
from tasks.params.train import LoopConfig, LossConfig, ModelConfig, RunOut
from tasks.render.run import evaluate, metric_lines
from tasks.render.sheets import load_sampled, render_sheets
from tasks.taggers.backends import load_tagger
from tasks.taggers.colors import measure_colors
from tasks.typed import to_dict, validate_all

log = logging.getLogger(__name__)

DEFAULT_FACES = ("../shared/data/faces_train/*.jpg", "../shared/data/faces/dlgan_*.jpg")
DEMO_SIZES = {"image_size": 32, "g_channels": 32, "g_blocks": 4, "d_channels": (32, 64, 128), "d_blocks": 1}
PAPER_SIZES = {k: getattr(ModelConfig(), k) for k in DEMO_SIZES}  # 128 px, 64 ch, 16 blocks, [32..1024], 2
SOURCES_KEY = "moeflow.paper_run.sources"  # what the dataset was built from: reused while it matches
# dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, most specific first
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0),
               ("L40S", 362.1), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


# ---------------------------------------------------------------- 1. the dataset

def collect(patterns: list[str], limit: int = 0) -> tuple[list[str], list[bytes], list[str]]:
    """(face ids, file bytes, names) of the images the globs match, by face id (= sha256 of the
    file), duplicates and unreadable files left out with a warning; `limit` keeps the first N ids."""
    files = sorted({p for pat in patterns for p in glob.glob(pat) if os.path.isfile(p)})
    if not files:
        raise DataError(f"no face images match {', '.join(patterns)} (pass --faces GLOB, or --data PARQUET)")
    found: dict[str, tuple[bytes, str]] = {}
    bad, dups = [], 0
    for f in files:
        data = Path(f).read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped and named
            bad.append(f"{f} ({type(e).__name__})")
            continue
        fid = hashlib.sha256(data).hexdigest()
        dups += fid in found
        found.setdefault(fid, (data, f))
    if bad:
        log.warning("paper run: %d unreadable files left out, e.g. %s", len(bad), "; ".join(bad[:3]))
    if dups:
        log.warning("paper run: %d files left out as byte-identical copies of others", dups)
    if not found:
        raise DataError(f"none of the {len(files)} files matching {', '.join(patterns)} is a readable image")
    ids = sorted(found)[:limit or None]
    return ids, [found[i][0] for i in ids], [found[i][1] for i in ids]


def _colours_of(data: bytes, size: int, refine: float):
    """(hair rgb, eye rgb) that animeface measures on the face enlarged to `size` (a pool task)."""
    with Image.open(io.BytesIO(data)) as im:
        face = im.convert("RGB").resize((size, size), Image.LANCZOS)
    return measure_colors(face, refine)


def read_attributes(images: list[bytes], params, tagger, workers: int) -> np.ndarray:
    """(N, 34) int8 attributes: the tagger's probabilities on each face at `detect.size`,
    binarised like the tag stage; all -1 (unknown) without a tagger."""
    if tagger is None:
        return np.full((len(images), len(MGM_TAGS)), -1, np.int8)
    size = params.detect.size
    if tagger.name == "color":  # animeface is single-threaded C: a process per core, forked like the tag stage's loader workers
        fn = partial(_colours_of, size=size, refine=params.tag.color.refine_delta_e)
        with ProcessPoolExecutor(max(1, workers), mp_context=get_context("fork")) as pool:
            colours = list(pool.map(fn, images, chunksize=max(1, min(64, len(images) // (4 * workers) or 1))))
        probs = tagger.backend.probs(colours)
    else:
        bs = params.tag.batch_size
        probs = np.concatenate([tagger.probabilities(np.stack([decode(b, size) for b in images[i:i + bs]]))
                                for i in range(0, len(images), bs)])
    return binarize(probs, params.tag)


def sources_key(face_ids: list[str], tagger_name: str, params) -> str:
    """What decides the dataset's rows: the images, the tagger and the tag and split params."""
    what = {"faces": hashlib.sha256("\n".join(face_ids).encode()).hexdigest(), "tagger": tagger_name,
            "size": params.detect.size, "holdout": params.train.holdout,
            "tag": to_dict(params.tag)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def build_dataset(path: Path, patterns: list[str], params, *, tagger=None, tagger_name: str = "none",
                  limit: int = 0, workers: int = 0) -> dict:
    """Write (or reuse) the training dataset at `path`; returns what it holds."""
    t0 = time.perf_counter()
    if path.exists() and not any(os.path.isfile(f) for pat in patterns for f in glob.glob(pat)):
        log.warning("paper run: no image matches %s: training on the dataset already in %s", ", ".join(patterns), path)
        return describe_dataset(path, reused=True)
    ids, images, _ = collect(patterns, limit)
    key = sources_key(ids, tagger_name, params)
    if path.exists():
        try:
            meta = pq.read_schema(path).metadata or {}
        except (OSError, pa.ArrowInvalid) as e:
            log.warning("paper run: %s is unreadable (%s): rebuilding it", path, e)
            meta = {}
        if meta.get(SOURCES_KEY.encode(), b"").decode() == key:
            log.info("paper run: %s is up to date (%d faces, tagger %s): reused", path, len(ids), tagger_name)
            return describe_dataset(path, reused=True)
        log.info("paper run: %s was built from other images or tag params: rebuilding it", path)
    log.info("paper run: reading the attributes of %d faces with the %s tagger", len(ids), tagger_name)
    attrs = read_attributes(images, params, tagger, workers or cores())
    splits = [split_of(fid, params.train.holdout) for fid in ids]
    write_dataset(path, ids, images, attrs.tolist(), splits, {SOURCES_KEY: key, TAGGER_KEY.decode(): tagger_name})
    log.info("paper run: dataset %s: %d faces, %.1f MB, in %.1f s", path, len(ids), path.stat().st_size / 1e6,
             time.perf_counter() - t0)
    return describe_dataset(path, reused=False)


def describe_dataset(path: Path, reused: bool) -> dict:
    t = read_parquet(path, EXPORT_TABLE, EXPORT_VERSION).select(["split", "attributes"])
    meta = t.schema.metadata or {}
    attrs = np.asarray(t.column("attributes").combine_chunks().flatten().to_numpy(), np.int8).reshape(t.num_rows, -1)
    return {"path": str(path), "faces": t.num_rows, "holdout": t.column("split").to_pylist().count(HOLDOUT),
            "mb": round(path.stat().st_size / 1e6, 1), "fingerprint": meta.get(FINGERPRINT_KEY, b"").decode(),
            "tagger": meta.get(TAGGER_KEY, b"?").decode(), "reused": reused,
            "hair_color_known": round(float((attrs[:, 0] >= 0).mean()), 3) if t.num_rows else 0.0}


# ---------------------------------------------------------------- 2. training, FLOPs

class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks on module inputs
    make autograd.grad on a leaf (the gradient penalty's) fail ("A leaf node was passed to
    _will_engine_execute_node"); every FLOP is then counted under "Global" only."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def step_flops(model: ModelConfig, loss: LossConfig, batch: int, device) -> float:
    """FLOPs of one training step (G forward, D's loss with the gradient penalty and its
    backward, G's loss and its backward) counted by torch.utils.flop_counter on fresh networks;
    the optimiser and EMA updates (elementwise) are not counted, as in MFU figures elsewhere."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    G, D = Generator(model).to(device), Discriminator(model).to(device)
    s = model.image_size
    z, cond = torch.randn(batch, model.z_dim, device=device), torch.zeros(batch, model.n_tags, device=device)
    real, u = torch.rand(batch, 3, s, s, device=device) * 2 - 1, torch.rand(batch, 3, s, s, device=device)
    known = torch.ones(batch, model.n_tags, device=device)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fake = G(z, cond)
        loss_d, _ = L.discriminator_loss(D, real, fake, cond, known, u, loss)
        loss_d.backward()
        loss_g, _ = L.generator_loss(D, fake, cond, loss)
        loss_g.backward()
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 TFLOP/s, where it came from)."""
    if given:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, f"no peak known for {device.type} (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for fragment, peak in PEAK_TFLOPS:
        if fragment in name:
            return peak, f"{name}: dense bf16 peak {peak:g} TFLOP/s"
    return None, f"no peak known for {name} (pass --peak-tflops)"


def mfu_section(run, device: torch.device, images_per_s: float, given_peak: float | None) -> dict:
    """FLOPs per step, achieved TFLOP/s at `images_per_s` and the MFU, or why it is unknown."""
    peak, note = peak_tflops(device, given_peak)
    try:
        flops = step_flops(run.model, run.loss, run.optim.batch, device)
    except Exception as e:  # noqa: BLE001 - a flop counter that breaks must say so, not stop the report
        log.warning("paper run: FLOPs not counted: %s: %s", type(e).__name__, e)
        return {"flops_per_step": None, "achieved_tflops": None, "peak_tflops": peak,
                "peak": f"FLOPs not counted ({type(e).__name__}: {e})", "mfu": None}
    achieved = flops * images_per_s / run.optim.batch / 1e12
    return {"flops_per_step": flops, "achieved_tflops": round(achieved, 4), "peak_tflops": peak, "peak": note,
            "mfu": round(achieved / peak, 4) if peak else None}


def train_timed(run) -> tuple[dict, list[tuple[float, int]], Trainer]:
    """Train; also the (time, step) of every log window, for a steady-state rate."""
    trainer = Trainer(run)
    windows: list[tuple[float, int]] = []
    flush = trainer.flush

    def timed_flush(first: int):
        row = flush(first)
        windows.append((time.perf_counter(), trainer.step))
        return row

    trainer.flush = timed_flush
    return trainer.fit(), windows, trainer


def steady_rate(windows: list[tuple[float, int]], batch: int) -> float | None:
    """Median images/s over the log windows after the first (the first holds warm-up / compile)."""
    rates = [(s1 - s0) * batch / (t1 - t0) for (t0, s0), (t1, s1) in zip(windows[1:], windows[2:]) if t1 > t0 and s1 > s0]
    return round(statistics.median(rates), 2) if rates else None


# ---------------------------------------------------------------- the command

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tasks.tools.paper_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/paper", help="the folder for everything (default data/paper)")
    ap.add_argument("--faces", action="append", metavar="GLOB",
                    help=f"face images (repeatable; default {' and '.join(DEFAULT_FACES)})")
    ap.add_argument("--data", help="train on this dataset Parquet (models.data's table) instead of building one")
    ap.add_argument("--limit", type=int, default=0, help="keep the first N faces by id (0 = all)")
    ap.add_argument("--params", default=DEFAULT_PARAMS, help="params file: the train recipe, tag, detect, render")
    ap.add_argument("--minutes", type=float, help="wall-clock training budget (default 8; --cpu-smoke 1)")
    ap.add_argument("--steps", type=int, default=0, help="stop at this step if the budget lasts (0 = no cap)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward passes")
    ap.add_argument("--eval-samples", type=int,
                    help="generated (and real) faces for the metrics (default render.eval_samples; --cpu-smoke 200)")
    ap.add_argument("--workers", type=int, default=0, help="tagging processes (0 = the cores)")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: known GPUs)")
    ap.add_argument("--fresh", action="store_true", help="delete OUT/train first (else the run resumes)")
    ap.add_argument("--prepare-only", action="store_true", help="build OUT/faces.parquet and stop")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="the same path at CPU scale: cpu, the demo's 32-px sizes, 1 minute, 200 eval samples")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    args.faces = args.faces or list(DEFAULT_FACES)
    args.minutes = args.minutes if args.minutes is not None else (1.0 if smoke else 8.0)
    if args.eval_samples is None and smoke:
        args.eval_samples = 200
    if smoke:
        args.device = "cpu"
    for name in ("minutes", "steps", "limit", "workers", "eval_samples"):
        if (getattr(args, name) or 0) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.batch < 2 or args.minutes == 0 and not args.steps:
        ap.error("--batch must be >= 2, and --minutes or --steps must bound the run")
    return args


def run_config(params, args, data: Path, out: Path):
    t = params.train
    sizes = DEMO_SIZES if args.cpu_smoke else PAPER_SIZES
    loop = LoopConfig(steps=args.steps or 10**9, seed=t.loop.seed, device=args.device, compile=args.compile,
                      checkpoint_every=200 if args.cpu_smoke else 1000, keep_checkpoints=2,
                      log_every=10 if args.cpu_smoke else 100, max_minutes=args.minutes, keep_runs=2)
    cfg = dataclasses.replace(t, model=dataclasses.replace(t.model, **sizes),
                              optim=dataclasses.replace(t.optim, batch=args.batch), loop=loop,
                              out=RunOut(data=str(data), dir=str(out / "train")))
    run = cfg.resolved()
    validate_all(run, "run")  # a ConfigError: one line
    return cfg, run


def paper_run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = load_params(args.params)
    cascade = Path(params.detect.cascade)
    if params.detect.detector == "lbpcascade" and not cascade.is_file():  # before minutes of training, not after
        raise DataError(f"detect.cascade {cascade} not found: run `python -m tasks.fetch` (or point "
                        "detect.cascade at a copy) - detectability needs it")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tagger, why_not = None, "render.tagger is none"
    if params.render.tagger != "none":
        try:
            tagger, why_not = load_tagger(params.tag), ""
        except Exception as e:  # noqa: BLE001 - missing weights etc.: attributes unknown, the run goes on
            why_not = f"tag backend unusable: {type(e).__name__}: {e}"
    if tagger is None:
        log.warning("paper run: no tagger (%s): attributes unknown, agreement unavailable", why_not)
    if args.data:
        data = Path(args.data)
        if not data.is_file():
            raise DataError(f"--data {data} does not exist")
        dataset = describe_dataset(data, reused=True)
    else:
        data = out / "faces.parquet"
        dataset = build_dataset(data, args.faces, params, tagger=tagger, tagger_name=tagger.name if tagger else "none",
                                limit=args.limit, workers=args.workers)
    timings["dataset_s"] = round(time.perf_counter() - t0, 1)
    if args.prepare_only:
        return {"out": str(out), "dataset": dataset, "timings": timings}

    _, run = run_config(params, args, data, out)
    if args.fresh:
        shutil.rmtree(out / "train", ignore_errors=True)
    if not args.cpu_smoke and not torch.cuda.is_available():
        log.warning("paper run: no GPU: the 128-px model trains on the CPU at a few images/s (--cpu-smoke: 32 px)")
    t0 = time.perf_counter()
    try:
        result, windows, trainer = train_timed(run)
    except (TrainingError, ValueError) as e:
        raise DataError(str(e)) from None
    timings["train_s"] = round(time.perf_counter() - t0, 1)
    device = trainer.device
    steady = steady_rate(windows, run.optim.batch)
    perf = {"images_per_s": result["images_per_s"], "images_per_s_steady": steady}
    perf.update(mfu_section(run, device, steady or result["images_per_s"] or 0.0, args.peak_tflops))

    t0 = time.perf_counter()
    G, sampler, meta = load_sampled(out / "train" / GENERATOR, device)
    n_eval = params.render.eval_samples if args.eval_samples is None else args.eval_samples
    rcfg = dataclasses.replace(params.render, eval_samples=n_eval, device=str(device),
                               out=RenderOut(samples=str(out / "samples"), metrics=str(out / "metrics.json"),
                                             attributes=str(out / "attributes.json")))
    sheets = render_sheets(G, sampler, rcfg.out.samples, seed=rcfg.seed, grid=rcfg.grid, variations=rcfg.variations,
                           fixed_tag_rows=rcfg.fixed_tag_rows, pairs=rcfg.interpolation_pairs,
                           steps=rcfg.interpolation_steps, batch=rcfg.batch)
    timings["render_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    quality, detail = evaluate(G, sampler, rcfg, str(data), params.detect, tagger, params.tag, why_not)
    timings["metrics_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(rcfg.out.attributes, detail)
    report = {"date": datetime.date.today().isoformat(), "out": str(out), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "mode": "cpu-smoke" if args.cpu_smoke else "paper", "model": dataclasses.asdict(run.model),
              "batch": run.optim.batch, "bf16": trainer.amp, "channels_last": trainer.channels_last,
              "compile": run.loop.compile, "threads": trainer.threads, "dataset": dataset,
              "train": {k: result[k] for k in ("run", "step", "steps_trained", "resumed_from", "wall_s",
                                               "nan_recoveries", "loss_d", "loss_g", "gp", "d_real", "d_fake")
                        if k in result},
              "budget_minutes": args.minutes, "performance": perf, "step": int(meta.get("step", 0)),
              **quality, "grid": str(sheets["grid"]), "timings": timings}
    atomic_write_json(rcfg.out.metrics, report)
    return report


def summary_lines(r: dict) -> list[str]:
    p, t = r["performance"], r["train"]
    mfu = f"MFU {p['mfu']:.1%} of {p['peak_tflops']:g} TFLOP/s" if p["mfu"] is not None else f"MFU: {p['peak']}"
    steady = f", {p['images_per_s_steady']} steady" if p["images_per_s_steady"] else ""
    return [f"{r['device_name']}: {r['model']['image_size']} px, {r['model']['g_blocks']} G blocks, batch {r['batch']}, "
            f"bf16 {r['bf16']}, compile {r['compile']}; {r['dataset']['faces']} faces ({r['dataset']['tagger']} tags)",
            f"trained steps {t.get('resumed_from') or 0} -> {t['step']} in {t['wall_s']} s "
            f"(budget {r['budget_minutes']:g} min)",
            f"images/s: {p['images_per_s']} over the session{steady}; " + (
                f"{p['flops_per_step'] / 1e9:.1f} GFLOP/step, {p['achieved_tflops']:.3g} TFLOP/s; {mfu}"
                if p["flops_per_step"] else mfu),
            *metric_lines(r), f"grid: {r['grid']}; metrics: {Path(r['out']) / 'metrics.json'}"]


@one_line_errors(interrupted="error: interrupted")
def main(argv: list[str] | None = None) -> int:
    from tasks.stage import setup_logging

    args = parse(argv)
    setup_logging()
    report = paper_run(args)
    if args.prepare_only:
        d = report["dataset"]
        print(f"dataset {d['path']}: {d['faces']} faces ({d['holdout']} held out), {d['mb']} MB, "
              f"{d['tagger']} tags (hair colour known for {d['hair_color_known']:.0%})")
        return 0
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
