"""The DRAGAN training loop: needs only torch, numpy, pyarrow (+ Pillow, safetensors).

    python -m models.training_loop --config data/train/run.json          # one device
    torchrun --nproc_per_node 8 -m models.training_loop --config run.json   # DDP, same script

Each run lives in <out>/runs/<identity> (models.runs): another param set, seed or training data
is another run, and never touches this one's checkpoints. Resume is automatic (the run's newest
checkpoint) and exact on CPU: weights, optimisers, step, the device generator that draws data
order flips / noise / tags / GP noise, the torch RNG, the lr scale. The only host
synchronisations are at log / checkpoint boundaries, where a non-finite loss restores the last
checkpoint with a lower learning rate. This module is the loop (one step, then a log window's
flush, a checkpoint or a NaN recovery at its boundaries); what it keeps — checkpoints with every
RNG state, the metrics window and plots.csv, the agreement between ranks — is models.bookkeeping."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from models import checkpoint as ckpt
from models import loss as L
from models.bookkeeping import Checkpoints, MetricsWindow, Ranks, TrainingError
from models.conditioning import TagSampler, tag_frequencies
from models.data import FaceData
from models.device import busy_note, choose_threads, cpu_has_fast_bf16, resolve_device
from models.dragan import Discriminator, Generator
from models.runs import PlotsLog, RunDir, describe_change
from tasks.artifacts.generator import FILE_NAME as GENERATOR_FILE
from tasks.artifacts.generator import save_generator
from tasks.errors import MoeflowError
from tasks.fileio import atomic_write_json
from tasks.params.train import RunConfig
from tasks.typed import build, to_dict

log = logging.getLogger(__name__)

METRICS = ("loss_d", "loss_g", "adv_d", "adv_g", "cls_real", "cls_fake", "gp", "acc_real", "acc_fake",
           "d_real", "d_fake")
PLOTS, SUMMARY, GENERATOR, REPORT = "plots.csv", "summary.json", GENERATOR_FILE, "report.json"
# the DVC metric: the headline numbers of SUMMARY (which also has the run, the data and every loss term)
HEADLINE, HEADLINE_KEYS = "metrics.json", ("step", "faces", "loss_d", "loss_g")


class Trainer:
    def __init__(self, run: RunConfig):
        self.run, cfg = run, run.loop
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        try:
            self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")), key="loop.device")
        except ValueError as e:
            raise TrainingError(str(e)) from None
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if run.optim.batch % self.world:
                raise TrainingError(f"optim.batch {run.optim.batch} is not divisible by {self.world} processes")
        self.threads = choose_threads(cfg.threads, self.world) if self.device.type == "cpu" else torch.get_num_threads()
        torch.set_num_threads(self.threads)
        note = busy_note(self.threads) if self.device.type == "cpu" and self.rank == 0 else None
        if note:
            log.info("train: %s", note)
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp == "bf16" or (cfg.amp == "auto" and (cuda or cpu_has_fast_bf16()))
        self.channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and (cuda or self.amp))
        self.out = Path(run.out.dir)
        self.data = FaceData(run.out.data, run.model.image_size, self.device, seed=cfg.seed, batch=run.optim.batch,
                             rank=self.rank, world=self.world, cache_gb=cfg.cache_gb, threads=cfg.loader_threads,
                             channels_last=self.channels_last)
        if self.data.attributes.shape[1] != run.model.n_tags:
            raise TrainingError(f"{run.out.data} has {self.data.attributes.shape[1]} tags, model.n_tags is {run.model.n_tags}")
        self.rundir = RunDir(self.out, run, self.data.fingerprint)
        self.ranks = Ranks(self.world, self.rank, self.device)
        self.plots = PlotsLog(self.rundir.plots, (*METRICS, "lr"))
        self.window = MetricsWindow(METRICS, self.plots, self.ranks)
        self.checkpoints = Checkpoints(self)
        self.freqs = tag_frequencies(self.data.attributes)
        self.sampler = TagSampler(self.freqs, self.device)
        # G's tag loss covers only the tags some face knows (D's tag head never learns the others)
        self.tag_mask = (self.data.known.sum(0) > 0).float()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G = Generator(run.model).to(self.device, memory_format=mf)
        self.D = Discriminator(run.model).to(self.device, memory_format=mf)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        o = run.optim
        self.opt_g = self._adam(self.G.parameters(), o.lr)
        self.opt_d = self._adam(self.D.parameters(), o.lr_d)
        self.G_fwd, self.D_fwd = self.G, self.D
        if cfg.compile:  # the gradient penalty (double backward) always runs the eager D
            self.G_fwd, self.D_fwd = torch.compile(self.G), torch.compile(self.D)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed * 7919 + self.rank)
        self.ema_p, self.g_p = list(self.G_ema.parameters()), list(self.G.parameters())
        self.ema_b, self.g_b = list(self.G_ema.buffers()), list(self.G.buffers())
        self.step, self.lr_scale, self.nan_recoveries, self.resumed_from = 0, 1.0, 0, None
        self.last: dict = {}
        self.n_params = sum(p.numel() for p in self.G.parameters()) + sum(p.numel() for p in self.D.parameters())

    def _adam(self, params, lr: float):
        o = self.run.optim
        try:
            return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), fused=True)
        except (RuntimeError, TypeError):  # no fused kernel for this device / build
            return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), foreach=True)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def ema_beta(self, step: int) -> float:
        """The EMA decay after `step` + 1 steps: ema_decay, or less while the ramp-up caps the
        EMA's half-life at ema_rampup x the images seen so far (stylegan2-ada's ema_rampup)."""
        o = self.run.optim
        if o.ema_rampup <= 0 or o.ema_decay <= 0:
            return o.ema_decay
        half_life = (step + 1) * o.batch * o.ema_rampup  # in images
        return min(o.ema_decay, 0.5 ** (o.batch / half_life))

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
        self.ranks.mean_grads(self.D)
        self.opt_d.step()
        with self._autocast():
            loss_g, pg = L.generator_loss(self.D_fwd, fake, cond, self.run.loss, self.tag_mask)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.ranks.mean_grads(self.G)
        self.opt_g.step()
        with torch.no_grad():
            # torch._foreach_lerp_ is the fused form of `ema += (1 - beta) * (g - ema)` over the list.
            # Private but safe here: the public EMA helper torch.optim.swa_utils.get_ema_multi_avg_fn
            # is this very call (for float tensors), torch is pinned (==2.13.0), and were the op ever
            # renamed, the first step raises an AttributeError: no silent change of the numbers.
            # Kept over the public helper because its decay is fixed, and ours ramps up (ema_beta).
            torch._foreach_lerp_(self.ema_p, self.g_p, 1.0 - self.ema_beta(step))
            torch._foreach_copy_(self.ema_b, self.g_b)
            self.window.add({**pd, **pg})

    # ---------------------------------------------------------------- bookkeeping (models.bookkeeping)
    def flush(self, first: int) -> dict | None:
        """The window's mean metrics (a host sync); None when a loss went non-finite."""
        return self.window.flush(self.step, first, self.run.optim.lr * self.lr_scale)

    def recover(self, first: int) -> None:
        o = self.run.optim
        self.nan_recoveries += 1
        if self.nan_recoveries > o.max_nan_recoveries:
            raise TrainingError(f"non-finite loss again after {o.max_nan_recoveries} recoveries; giving up")
        self.lr_scale *= o.nan_lr_factor
        self.checkpoints.load(self.checkpoints.latest(), counters=False)
        self.window.restart(self.step)
        log.warning("non-finite loss in steps %d-%d: restored the checkpoint at step %d, lr lowered to %.3g "
                    "(recovery %d of %d)", first + 1, first + self.run.loop.log_every, self.step,
                    o.lr * self.lr_scale, self.nan_recoveries, o.max_nan_recoveries)

    # ---------------------------------------------------------------- the loop
    def start(self) -> None:
        """Resume this identity's run, or start it (recording what changed against the last run)."""
        cfg = self.run.loop
        found = self.checkpoints.latest()
        if self.rank == 0:
            if found is None:
                prev = self.rundir.previous_identity()
                if prev is not None:
                    log.info("train: a new run %s (%s); the earlier runs' checkpoints stay in %s", self.rundir.id,
                             describe_change(prev, self.rundir.identity), self.rundir.root)
            self.rundir.open(self.run)
            self.rundir.prune(cfg.keep_runs)
        self.ranks.barrier()
        if found is not None:
            self.checkpoints.load(found)
            self.resumed_from = self.step
            self.window.restart(self.step)
            log.info("resuming run %s from %s (step %d)", self.rundir.id, found, self.step)
        else:
            self.window.restart(None)
            self.checkpoints.save()  # step 0: NaN recovery always has a checkpoint to return to

    def fit(self) -> dict:
        cfg = self.run.loop
        self.out.mkdir(parents=True, exist_ok=True)
        self.start()
        log.info("training run %s: %d -> %d steps on %s x%d (%d threads, bf16 autocast %s, channels_last %s, "
                 "compile %s), %.1fM params", self.rundir.id, self.step, cfg.steps, self.device, self.world,
                 self.threads, self.amp, self.channels_last, cfg.compile, self.n_params / 1e6)
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                       disable=None)  # None: no bar when stderr is not a terminal (logs stay readable)
            if bar.disable:  # not a terminal: a log line per log window instead
                bar = None
        t_start, start_step, first = time.perf_counter(), self.step, self.step
        budget = cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        while self.step < cfg.steps:
            self.train_step(self.step)
            self.step += 1
            s = self.step
            over = s % cfg.log_every == 0 and self.ranks.agree(time.perf_counter() - t_start > budget)
            ckpt_now = s % cfg.checkpoint_every == 0 or s == cfg.steps or over
            if bar is not None:
                bar.update(1)
            if s % cfg.log_every and not ckpt_now:
                continue
            row = self.flush(first)
            if row is None:
                self.recover(first)
                if bar is not None:
                    bar.n = self.step
                    bar.refresh()
            else:
                self.last = row
                if bar is not None:
                    bar.set_postfix(d=f"{row['loss_d']:.3g}", g=f"{row['loss_g']:.3g}", gp=f"{row['gp']:.3g}")
                elif self.rank == 0:
                    log.info("step %d/%d: loss_d %.3g loss_g %.3g gp %.3g", s, cfg.steps, row["loss_d"],
                             row["loss_g"], row["gp"])
                if ckpt_now:
                    self.checkpoints.save()
            first = self.step
            if over:
                log.info("train: stopped at step %d: loop.max_minutes %g reached", self.step, cfg.max_minutes)
                break
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t_start
        trained = self.step - start_step
        report = {"run": self.rundir.id, "steps_trained": trained, "wall_s": round(wall, 2), "threads": self.threads,
                  "device": str(self.device), "world": self.world,
                  "images_per_s": round(trained * self.run.optim.batch / wall, 2) if trained else None}
        summary = {"run": self.rundir.id, "step": self.step, "resumed_from": self.resumed_from,
                   "nan_recoveries": self.nan_recoveries, "lr": self.run.optim.lr * self.lr_scale,
                   "data_fingerprint": self.data.fingerprint, "faces": self.data.n, "holdout": self.data.n_holdout,
                   "tagger": self.data.tagger or None, "tagger_reason": self.data.tagger_reason or None,
                   **{k: self.last[k] for k in METRICS if k in self.last}}
        if self.rank == 0:
            self.export_generator()
            self.plots.copy_to(self.out / PLOTS)
            atomic_write_json(self.out / SUMMARY, summary)
            atomic_write_json(self.out / HEADLINE, {k: summary[k] for k in HEADLINE_KEYS if k in summary})
        self.data.close()
        return {**summary, **report}

    def export_generator(self) -> Path:
        """The EMA generator, its BatchNorm statistics measured for its own weights, with what
        render needs to rebuild it, as one safetensors file."""
        path = self.out / GENERATOR
        G = copy.deepcopy(self.G_ema)
        recalibrate_batchnorm(G, self.sampler, seed=self.run.loop.seed, batch=self.run.optim.batch)
        meta = {"model": json.dumps(to_dict(self.run.model)), "sampler": json.dumps(self.freqs),
                "step": str(self.step), "run": self.rundir.id, "data_fingerprint": self.data.fingerprint,
                "version": ckpt.package_version()}
        return save_generator(path, G, meta)


BN_BATCHES = 16  # batches of noise and tags the EMA generator's BatchNorm statistics are measured on


@torch.no_grad()
def recalibrate_batchnorm(G: Generator, sampler: TagSampler, *, seed: int, batch: int) -> None:
    """Replace the running BatchNorm statistics (G's, copied while training) by those of G's own
    weights: an average of weights needs the statistics of its activations, not of the last raw
    generator's (SWA's bn_update). Deterministic: the noise comes from `seed`."""
    bns = [m for m in G.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    dev = next(G.parameters()).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed * 6007 + 1)
    G.train()
    for _ in range(BN_BATCHES):
        G(torch.randn(batch, G.cfg.z_dim, device=dev, generator=gen), sampler.sample(batch, gen))
    G.eval()
    for m, mom in zip(bns, momenta):
        m.momentum = mom


def train(run: RunConfig) -> dict:
    """Train (or resume) one run; returns the summary (written to <out>/summary.json, its headline
    to <out>/metrics.json) and the session's timings (the caller's run report: they are not a
    property of the model)."""
    return Trainer(run).fit()


def load_run(path: str | os.PathLike) -> RunConfig:
    """A run.json, its preset applied (as the train stage writes it, applying it again changes nothing)."""
    with open(path, encoding="utf-8") as f:
        return build(RunConfig, json.load(f), "run").resolved()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.training_loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="run.json (written by the train stage, or by hand)")
    ap.add_argument("--steps", type=int, help="override loop.steps")
    ap.add_argument("--device", help="override loop.device")
    ap.add_argument("--threads", type=int, help="override loop.threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
        for key in ("steps", "device", "threads"):
            if getattr(args, key) is not None:
                data.setdefault("loop", {})[key] = getattr(args, key)
        summary = train(build(RunConfig, data, "run").resolved())
    except (TrainingError, ValueError, OSError, MoeflowError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    log.info("done: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
