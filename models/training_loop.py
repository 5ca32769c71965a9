"""The DRAGAN training loop: needs only torch, numpy, pyarrow (+ Pillow, safetensors).

    python -m models.training_loop --config data/train/run.json          # one device
    torchrun --nproc_per_node 8 -m models.training_loop --config run.json   # DDP, same script

Resume is automatic (the newest checkpoint under <out>/checkpoints) and exact on CPU: weights,
optimisers, step, the device generator that draws data order flips / noise / tags / GP noise,
the torch RNG, the lr scale. The only host synchronisations are at log / checkpoint
boundaries, where a non-finite loss restores the last checkpoint with a lower learning rate."""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from models import checkpoint as ckpt
from models import loss as L
from models.conditioning import TagSampler, tag_frequencies
from models.config import RunConfig, from_dict, to_dict
from models.data import FaceData
from models.dragan import Discriminator, Generator

log = logging.getLogger(__name__)

METRICS = ("loss_d", "loss_g", "adv_d", "adv_g", "cls_real", "cls_fake", "gp", "acc_real", "acc_fake",
           "d_real", "d_fake")
PLOTS, SUMMARY, GENERATOR, CHECKPOINTS = "plots.csv", "metrics.json", "generator.safetensors", "checkpoints"
FIXED_ON_RESUME = ("model", "loss", "optim")  # sections a resumed run must share with its checkpoint


class TrainingError(RuntimeError):
    """The run cannot go on (bad checkpoint, config mismatch, repeated non-finite losses)."""


class CheckpointMismatch(TrainingError):
    """The checkpoint was made with other model / loss / optim params or another seed."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"loop.device is {name!r} but CUDA is not available (use auto or cpu)")
    return dev


class Trainer:
    def __init__(self, run: RunConfig):
        self.run, cfg = run, run.loop
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if run.optim.batch % self.world:
                raise TrainingError(f"optim.batch {run.optim.batch} is not divisible by {self.world} processes")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp == "bf16" or (cfg.amp == "auto" and cuda)
        self.channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda)
        self.out = Path(run.out)
        self.ckpt_dir = self.out / CHECKPOINTS
        self.data = FaceData(run.data, run.model.image_size, self.device, seed=cfg.seed, batch=run.optim.batch,
                             rank=self.rank, world=self.world, cache_gb=cfg.cache_gb, threads=cfg.loader_threads,
                             channels_last=self.channels_last)
        if self.data.attributes.shape[1] != run.model.n_tags:
            raise TrainingError(f"{run.data} has {self.data.attributes.shape[1]} tags, model.n_tags is {run.model.n_tags}")
        self.freqs = tag_frequencies(self.data.attributes)
        self.sampler = TagSampler(self.freqs, self.device)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G = Generator(run.model).to(self.device, memory_format=mf)
        self.D = Discriminator(run.model).to(self.device, memory_format=mf)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        o = run.optim
        self.opt_g = self._adam(self.G.parameters())
        self.opt_d = self._adam(self.D.parameters())
        self.G_fwd, self.D_fwd = self.G, self.D
        if cfg.compile:  # the gradient penalty (double backward) always runs the eager D
            self.G_fwd, self.D_fwd = torch.compile(self.G), torch.compile(self.D)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed * 7919 + self.rank)
        self.ema_p = [p for p in self.G_ema.parameters()]
        self.g_p = [p for p in self.G.parameters()]
        self.ema_b = [b for b in self.G_ema.buffers()]
        self.g_b = [b for b in self.G.buffers()]
        self.acc = torch.zeros(len(METRICS), device=self.device)
        self.step, self.lr_scale, self.nan_recoveries, self.resumed_from = 0, 1.0, 0, None
        self.base_lr = o.lr
        self.n_params = sum(p.numel() for p in self.G.parameters()) + sum(p.numel() for p in self.D.parameters())

    def _adam(self, params):
        o = self.run.optim
        try:
            return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), fused=True)
        except (RuntimeError, TypeError):  # no fused kernel for this device / build
            return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), foreach=True)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    # ---------------------------------------------------------------- one step, no host sync
    def train_step(self, step: int) -> None:
        real, tags, known = self.data.batch_at(step, self.gen)
        b = real.shape[0]
        z = torch.randn(b, self.run.model.z_dim, device=self.device, generator=self.gen)
        cond = self.sampler.sample(b, self.gen)
        u = torch.rand(real.shape, device=self.device, generator=self.gen)
        with self._autocast():
            fake = self.G_fwd(z, cond)
            loss_d, pd = L.discriminator_loss(self.D_fwd, real, fake, tags, known, u, self.run.loss, D_gp=self.D)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._allreduce(self.D)
        self.opt_d.step()
        with self._autocast():
            loss_g, pg = L.generator_loss(self.D_fwd, fake, cond, self.run.loss)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._allreduce(self.G)
        self.opt_g.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_p, self.g_p, 1.0 - self.run.optim.ema_decay)
            torch._foreach_copy_(self.ema_b, self.g_b)
            parts = {**pd, **pg}
            self.acc += torch.stack([parts[k].float() for k in METRICS])

    def _allreduce(self, module: torch.nn.Module) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        o = 0
        for g in grads:
            g.copy_(flat[o:o + g.numel()].view(g.shape))
            o += g.numel()

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> None:
        gens = [self.gen.get_state()]
        if self.world > 1:
            import torch.distributed as dist

            gens = [None] * self.world
            dist.all_gather_object(gens, self.gen.get_state())
        if self.rank == 0:
            tensors = {**ckpt.flat_state("g", self.G), **ckpt.flat_state("d", self.D),
                       **ckpt.flat_state("g_ema", self.G_ema)}
            state = {"step": self.step, "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                     "rng": {"gen": gens, "cpu": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
                     "lr_scale": self.lr_scale, "nan_recoveries": self.nan_recoveries, "world": self.world,
                     "config": to_dict(self.run), "sampler": self.freqs, "version": ckpt.package_version()}
            ckpt.save(self.ckpt_dir, self.step, tensors, state, self.run.loop.keep_checkpoints)
        self._barrier()

    def load(self, path: Path, *, counters: bool = True) -> None:
        tensors, state = ckpt.load(path, "cpu")
        saved = state["config"]
        for section in FIXED_ON_RESUME:
            if saved[section] != to_dict(getattr(self.run, section)):
                raise CheckpointMismatch(f"{path}: made with different {section} params ({saved[section]}); restore "
                                    f"them or delete {self.ckpt_dir} to start over")
        if saved["loop"]["seed"] != self.run.loop.seed:
            raise CheckpointMismatch(f"{path}: made with loop.seed {saved['loop']['seed']}, now {self.run.loop.seed}")
        for name, module in (("g", self.G), ("d", self.D), ("g_ema", self.G_ema)):
            module.load_state_dict(ckpt.split_state(tensors, name))
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        gens = state["rng"]["gen"]
        if len(gens) == self.world:
            self.gen.set_state(gens[self.rank])
        else:
            log.warning("checkpoint made with %d processes, now %d: noise streams reseeded", len(gens), self.world)
            self.gen.manual_seed(self.run.loop.seed * 7919 + self.rank + 104729 * state["step"])
        torch.set_rng_state(state["rng"]["cpu"])
        if self.device.type == "cuda" and len(state["rng"]["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])
        if counters:
            self.lr_scale, self.nan_recoveries = float(state["lr_scale"]), int(state["nan_recoveries"])
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = self.base_lr * self.lr_scale

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    # ---------------------------------------------------------------- metrics
    def _truncate_plots(self, upto: int) -> None:
        path = self.out / PLOTS
        if self.rank:
            return
        if not path.exists():  # lost history (deleted by hand): start the file, keep going
            self._write_plots([], "w")
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= upto]
        self._write_plots(rows, "w")

    def _write_plots(self, rows: list[dict], mode: str) -> None:
        path = self.out / PLOTS
        new = mode == "w" or not path.exists()
        with open(path, mode if not new else "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=("step", *METRICS, "lr", "images_per_s"))
            if new:
                w.writeheader()
            w.writerows(rows)

    def flush(self, t0: float, first: int) -> dict | None:
        """The window's mean metrics (a host sync); None when a loss went non-finite."""
        acc = self.acc
        if self.world > 1:
            import torch.distributed as dist

            acc = acc.clone()
            dist.all_reduce(acc)
            acc /= self.world
        vals = acc.tolist()
        self.acc.zero_()
        if not all(math.isfinite(v) for v in vals):
            return None
        n = max(1, self.step - first)
        secs = max(time.perf_counter() - t0, 1e-9)
        row = {"step": self.step, **{k: round(v / n, 6) for k, v in zip(METRICS, vals)},
               "lr": self.base_lr * self.lr_scale, "images_per_s": round(n * self.run.optim.batch / secs, 2)}
        if self.rank == 0:
            self._write_plots([row], "a")
        return row

    def recover(self, first: int) -> None:
        o = self.run.optim
        self.nan_recoveries += 1
        if self.nan_recoveries > o.max_nan_recoveries:
            raise TrainingError(f"non-finite loss again after {o.max_nan_recoveries} recoveries; giving up")
        self.lr_scale *= o.nan_lr_factor
        path = ckpt.latest(self.ckpt_dir)
        self.load(path, counters=False)
        self._truncate_plots(self.step)
        log.warning("non-finite loss in steps %d-%d: restored the checkpoint at step %d, lr lowered to %.3g "
                    "(recovery %d of %d)", first + 1, first + self.run.loop.log_every, self.step,
                    self.base_lr * self.lr_scale, self.nan_recoveries, o.max_nan_recoveries)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict:
        cfg = self.run.loop
        self.out.mkdir(parents=True, exist_ok=True)
        found = ckpt.latest(self.ckpt_dir)
        if found is not None and cfg.on_param_change == "restart":
            try:
                self.load(found)
            except CheckpointMismatch as e:
                # a param change means a new run (what `dvc repro` / `dvc exp run -S` expect), not a resume
                log.warning("%s: starting a new run (train.loop.on_param_change: restart)", e)
                if self.rank == 0:
                    shutil.rmtree(self.ckpt_dir, ignore_errors=True)
                self._barrier()
                found = None
        elif found is not None:
            self.load(found)
        if found is not None:
            self.resumed_from = self.step
            self._truncate_plots(self.step)
            log.info("resuming from %s (step %d)", found, self.step)
        else:
            if self.rank == 0 and (self.out / PLOTS).exists():
                (self.out / PLOTS).unlink()
            self.save()  # step 0: NaN recovery always has a checkpoint to return to
        log.info("training %d -> %d steps on %s x%d (bf16 autocast %s, channels_last %s, compile %s), %.1fM params",
                 self.step, cfg.steps, self.device, self.world, self.amp, self.channels_last, cfg.compile,
                 self.n_params / 1e6)
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        t_start, start_step, last = time.perf_counter(), self.step, {}
        t0, first = time.perf_counter(), self.step
        while self.step < cfg.steps:
            self.train_step(self.step)
            self.step += 1
            s = self.step
            ckpt_now = s % cfg.checkpoint_every == 0 or s == cfg.steps
            if bar is not None:
                bar.update(1)
            if s % cfg.log_every and not ckpt_now:
                continue
            row = self.flush(t0, first)
            if row is None:
                self.recover(first)
                if bar is not None:
                    bar.n = self.step
                    bar.refresh()
            else:
                last = row
                if bar is not None:
                    bar.set_postfix(d=f"{row['loss_d']:.3g}", g=f"{row['loss_g']:.3g}", gp=f"{row['gp']:.3g}",
                                    img_s=f"{row['images_per_s']:.0f}")
                if ckpt_now:
                    self.save()
            t0, first = time.perf_counter(), self.step
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t_start
        summary = {"step": self.step, "resumed_from": self.resumed_from, "nan_recoveries": self.nan_recoveries,
                   "lr": self.base_lr * self.lr_scale, "device": str(self.device), "world": self.world,
                   "amp_bf16": self.amp, "wall_s": round(wall, 2),
                   "images_per_s": round((self.step - start_step) * self.run.optim.batch / max(wall, 1e-9), 2),
                   **{k: last.get(k) for k in METRICS}}
        if self.rank == 0:
            self.export_generator()
            ckpt._write_json(self.out / SUMMARY, summary)
        self.data.close()
        return summary

    def export_generator(self) -> Path:
        """The EMA generator with what render needs to rebuild it, as one safetensors file."""
        path = self.out / GENERATOR
        meta = {"model": json.dumps(to_dict(self.run.model)), "sampler": json.dumps(self.freqs),
                "step": str(self.step), "version": ckpt.package_version()}
        ckpt.save_weights(path, ckpt.flat_state("g_ema", self.G_ema), meta)
        return path


def train(run: RunConfig) -> dict:
    """Train (or resume) one run; returns the summary also written to <out>/metrics.json."""
    return Trainer(run).fit()


def load_run(path: str | os.PathLike) -> RunConfig:
    with open(path, encoding="utf-8") as f:
        return from_dict(RunConfig, json.load(f))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.training_loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="run.json (written by the train flow, or by hand)")
    ap.add_argument("--steps", type=int, help="override loop.steps")
    ap.add_argument("--device", help="override loop.device")
    ap.add_argument("--threads", type=int, help="override loop.threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
        for key in ("steps", "device", "threads"):
            if getattr(args, key) is not None:
                data.setdefault("loop", {})[key] = getattr(args, key)
        summary = train(from_dict(RunConfig, data))
    except (TrainingError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1
    log.info("done: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
