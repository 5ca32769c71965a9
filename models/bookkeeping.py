"""The training run's bookkeeping, kept apart from the loop (models.training_loop):

- `Ranks`: what the processes of one run agree on (gradients, the metrics window, when to stop);
  every method is free with one process;
- `Checkpoints`: a checkpoint holds the weights (G, D, EMA G), both optimisers, the step, every
  RNG stream (each rank's device generator, the torch CPU and CUDA states), the lr scale and the
  NaN-recovery count, so that a resume is exact; it is written by rank 0 after the ranks have
  checked that their weights agree;
- `MetricsWindow`: the loss terms summed on the device over one log window (no host sync per
  step), then their mean as one plots.csv row (models.runs.PlotsLog).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from models import checkpoint as ckpt
from models.runs import PlotsLog, describe_change
from tasks.typed import to_dict

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The run cannot go on (bad checkpoint, config mismatch, repeated non-finite losses)."""


class Ranks:
    """The processes of one run (torchrun's WORLD_SIZE / RANK); world 1 needs no process group."""

    def __init__(self, world: int, rank: int, device: torch.device):
        self.world, self.rank, self.device = world, rank, device

    def mean_grads(self, module: torch.nn.Module) -> None:
        """Average `module`'s gradients over the ranks (one all-reduce of a flat buffer)."""
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

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """`t` averaged over the ranks (a new tensor; `t` itself with one process)."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        t = t.clone()
        dist.all_reduce(t)
        return t / self.world

    def agree(self, flag: bool) -> bool:
        """`flag` on rank 0, for every rank (all ranks must stop at the same step)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


class Checkpoints:
    """Save and restore a Trainer's whole state in its run directory's checkpoints/."""

    def __init__(self, trainer):
        self.t = trainer

    def save(self) -> None:
        t = self.t
        digests = None
        gathered = t.ranks.gather((t.gen.get_state(), ckpt.params_digest(t.G, t.D, t.G_ema)) if t.world > 1
                                  else (t.gen.get_state(), None))
        gens = [g for g, _ in gathered]
        if t.world > 1:  # every rank's noise stream, and a check that the ranks' weights still agree
            digests = [d for _, d in gathered]
            if len(set(digests)) > 1:
                raise TrainingError(f"step {t.step}: the {t.world} processes' weights differ (parameter "
                                    f"digests {', '.join(d[:12] for d in digests)}); checkpoint not written")
        if t.rank == 0:
            tensors = {**ckpt.flat_state("g", t.G), **ckpt.flat_state("d", t.D), **ckpt.flat_state("g_ema", t.G_ema)}
            state = {"step": t.step, "opt_g": t.opt_g.state_dict(), "opt_d": t.opt_d.state_dict(),
                     "rng": {"gen": gens, "cpu": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if t.device.type == "cuda" else []},
                     "lr_scale": t.lr_scale, "nan_recoveries": t.nan_recoveries, "world": t.world,
                     "params_sha256": digests,
                     "config": to_dict(t.run), "identity": t.rundir.identity, "sampler": t.freqs,
                     "last": t.last, "version": ckpt.package_version()}
            ckpt.save(t.rundir.checkpoints, t.step, tensors, state, t.run.loop.keep_checkpoints)
        t.ranks.barrier()

    def load(self, path: Path, *, counters: bool = True) -> None:
        """Restore the checkpoint at `path`; counters=False keeps this session's lr scale and
        recovery count (NaN recovery lowers the lr on top of the restored weights)."""
        t = self.t
        tensors, state = ckpt.load(path, "cpu")
        if state.get("identity") != t.rundir.identity:  # only a corrupted or hand-moved checkpoint
            raise TrainingError(f"{path} belongs to another run ({describe_change(state.get('identity') or {}, t.rundir.identity)})")
        for name, module in (("g", t.G), ("d", t.D), ("g_ema", t.G_ema)):
            module.load_state_dict(ckpt.split_state(tensors, name))
        t.opt_g.load_state_dict(state["opt_g"])
        t.opt_d.load_state_dict(state["opt_d"])
        gens = state["rng"]["gen"]
        if len(gens) == t.world:
            t.gen.set_state(gens[t.rank])
        else:
            log.warning("checkpoint made with %d processes, now %d: noise streams reseeded", len(gens), t.world)
            t.gen.manual_seed(t.run.loop.seed * 7919 + t.rank + 104729 * state["step"])
        torch.set_rng_state(state["rng"]["cpu"])
        if t.device.type == "cuda" and len(state["rng"]["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        t.step, t.last = int(state["step"]), dict(state.get("last") or {})
        if counters:
            t.lr_scale, t.nan_recoveries = float(state["lr_scale"]), int(state["nan_recoveries"])
        for opt, lr in ((t.opt_g, t.run.optim.lr), (t.opt_d, t.run.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * t.lr_scale

    def latest(self) -> Path | None:
        return ckpt.latest(self.t.rundir.checkpoints)


class MetricsWindow:
    """The metrics of one log window: summed on the device each step, averaged at its end."""

    def __init__(self, names: tuple[str, ...], plots: PlotsLog, ranks: Ranks):
        self.names, self.plots, self.ranks = names, plots, ranks
        self.acc = torch.zeros(len(names), device=ranks.device)

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        """One step's loss terms (no host sync)."""
        self.acc += torch.stack([parts[k].float() for k in self.names])

    def flush(self, step: int, first: int, lr: float) -> dict | None:
        """The mean over steps first+1..step (a host sync), as a plots.csv row written by rank 0;
        None when a loss went non-finite. The window starts again empty."""
        vals = self.ranks.mean(self.acc).tolist()
        self.acc.zero_()
        if not all(math.isfinite(v) for v in vals):
            return None
        n = max(1, step - first)
        row = {"step": step, **{k: round(v / n, 6) for k, v in zip(self.names, vals)}, "lr": lr}
        if self.ranks.rank == 0:
            self.plots.write([row])
        return row

    def restart(self, step: int | None) -> None:
        """plots.csv for a run resumed at `step` (rows after it dropped), or a new one (None)."""
        if self.ranks.rank == 0:
            if step is None:
                self.plots.write([], "w")
            else:
                self.plots.truncate(step)
