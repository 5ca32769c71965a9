"""The render stage: sheets from the EMA generator, then its metrics (tasks.render.quality and
tasks.render.metrics) in `render.out.summary` (each metric's section, or why it is unavailable),
one number per metric in `render.out.metrics` (the DVC metric) and the per-attribute detail in
`render.out.attributes`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.device import resolve_device
from tasks.artifacts.detector import read_detector_spec
from tasks.artifacts.tagger import read_tagger_spec
from tasks.artifacts.tags import binarize
from tasks.artifacts.trainset import HOLDOUT, TRAIN, ExportFile
from tasks.detectors import AnimeFace, LbpCascade, read_cascade
from tasks.errors import DataError
from tasks.fileio import atomic_write_json
from tasks.params.detect import DetectConfig
from tasks.params.render import RenderConfig
from tasks.params.tag import TagConfig
from tasks.render import quality as Q
from tasks.render.metrics import Tagger, agreement, attribute_section, frechet_of_features, load_tagger
from tasks.render.report import headline, metric_lines, unavailable
from tasks.render.sheets import generate, load_sampled, render_sheets

log = logging.getLogger(__name__)
MIN_HELDOUT = 10  # memorisation needs at least this many held-out faces


@dataclass
class RenderSummary:
    sheets: dict[str, Path]
    metrics: dict
    step: int = 0
    samples_dir: str = ""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per metric, for the log, the Prefect artifact and the dataset card."""
        return metric_lines(self.metrics)

    def markdown(self) -> str:
        lines = ["# render", "", f"Generator after step {self.step}; {len(self.sheets)} sheets in `{self.samples_dir}`.",
                 "", "| sheet | file |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in self.sheets.items() if not k.startswith("attributes/")]
        lines += ["", *(f"- {line}" for line in self.lines())]
        return "\n".join(lines) + "\n"


def _section(name: str, fn) -> dict:
    """A metric section, or `available: false` with the exception's message."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one metric failing must say why, not hide the others
        log.warning("render: %s unavailable: %s: %s", name, type(e).__name__, e)
        return unavailable(e)


def stage_detectors(detect: DetectConfig) -> tuple[list[Q.NamedDetector], list[str]]:
    """The detectors with the detect stage's settings (its detector spec); the ones that cannot be
    built, with why."""
    found, notes = [], []
    try:
        xml, _ = read_cascade(detect.cascade)
        found.append(Q.NamedDetector("lbpcascade", LbpCascade(xml, detect.scale_factor, detect.min_neighbors,
                                                              detect.min_size).detect))
    except Exception as e:  # noqa: BLE001
        notes.append(f"lbpcascade: {e}")
    try:
        found.append(Q.NamedDetector("animeface", AnimeFace().detect))
    except Exception as e:  # noqa: BLE001
        notes.append(f"animeface: {e}")
    return found, notes


def evaluate(G, sampler, cfg: RenderConfig, data: str, detect: DetectConfig, tagger: Tagger | None,
             tag_cfg: TagConfig | None, reason: str) -> tuple[dict, dict]:
    """The metrics (compact) and the attribute detail, from `cfg.eval_samples` samples against the
    training dataset at `data`, measured with the detect stage's detector settings and the tag
    stage's tagger (and its binarisation, `tag_cfg`)."""
    n, px, view = cfg.eval_samples, G.cfg.image_size, detect.size
    metrics: dict = {"samples": int(n), "model_px": int(px)}
    if n == 0:
        off = unavailable("render.eval_samples is 0")
        return {**metrics, **{k: off for k in ("detectability", "diversity", "memorisation", "attributes",
                                               "frechet")}}, {}
    export = ExportFile(data)  # face_ids, attributes and split; crops read by row group when needed
    gen = torch.Generator(device=sampler.device)
    gen.manual_seed(cfg.seed + 1)
    z = torch.randn(n, G.cfg.z_dim, device=sampler.device, generator=gen)
    cond = sampler.sample(n, gen)
    fake = generate(G, z, cond, cfg.batch)
    rng = np.random.default_rng(cfg.seed)
    real_idx = np.sort(rng.permutation(len(export.face_ids))[:n])
    real = export.decode(real_idx, px)
    detectors, notes = stage_detectors(detect)

    def detectability():
        if not detectors:
            raise RuntimeError("no detector could be built: " + "; ".join(notes))
        return Q.detectability(fake, real, detectors, view, detect.detector)

    def diversity():
        m = min(len(fake), len(real))  # nearest-neighbour distances shrink with the set's size: same count
        return Q.diversity(fake[:m], real[:m])

    def memorisation():
        held, train = np.flatnonzero(export.split == HOLDOUT), np.flatnonzero(export.split == TRAIN)
        if len(held) < MIN_HELDOUT:
            raise ValueError(f"{len(held)} held-out faces (train.holdout of {len(export.face_ids)}); "
                             f"memorisation needs {MIN_HELDOUT}")
        size = min(px, Q.DISTANCE_SIZE)  # the training faces stream by row group: never all in memory
        return Q.memorisation(fake, export.decode(held, size), export.iter_decoded(train, size))

    metrics["detectability"] = _section("detectability", detectability)
    metrics["diversity"] = _section("diversity", diversity)
    metrics["memorisation"] = _section("memorisation", memorisation)
    detail: dict = {}
    if tagger is None:
        metrics["attributes"] = metrics["frechet"] = unavailable(reason or "no tagger")
        return metrics, detail
    fake_view, real_view = Q.resize(fake, view), Q.resize(real, view)

    def attributes():
        known_in_data = (export.attributes >= 0).any(0)
        target = np.where(known_in_data, cond.cpu().numpy().round().astype(np.int8), -1).astype(np.int8)
        samples = agreement(target, binarize(tagger.probabilities(fake_view), tag_cfg))
        ceiling = agreement(export.attributes[real_idx], binarize(tagger.probabilities(real_view), tag_cfg))
        section, more = attribute_section(tagger.name, samples, ceiling, px, n)
        detail.update(more)
        return section

    def frechet():
        f_fake = tagger.features(fake_view)
        if f_fake is None:
            raise ValueError(f"the {tagger.name} tagger has no features (Illustration2Vec's tag.i2v.feature_weights)")
        if len(real) < 2:
            raise ValueError("fewer than 2 real faces")
        return {"available": True, "value": round(frechet_of_features(tagger.features(real_view), f_fake), 4),
                "n_real": int(len(real)), "n": int(n), "features": tagger.name}

    metrics["attributes"] = _section("attributes", attributes)
    metrics["frechet"] = _section("frechet", frechet)
    return metrics, detail


def run_render(cfg: RenderConfig, data: str, tagger_spec: str, detector_spec: str,
               tagger: Tagger | None = None) -> RenderSummary:
    """The stage: sheets from `cfg.generator`, then its metrics against the training dataset at `data`
    (with the tag stage's tagger, `tagger_spec`, and the detect stage's settings, `detector_spec`).
    A `tagger` given here reads the samples instead, binarised with the spec's thresholds."""
    try:
        device = resolve_device(cfg.device, key="render.device")
    except ValueError as e:
        raise DataError(str(e)) from None
    if not Path(data).exists():
        raise DataError(f"{data} does not exist (run the train stage first)")
    detect, _ = read_detector_spec(detector_spec)
    G, sampler, meta = load_sampled(cfg.generator, device)
    step = int(meta.get("step", 0))
    sheets = render_sheets(G, sampler, cfg.out.samples, seed=cfg.seed, grid=cfg.grid, variations=cfg.variations,
                           fixed_tag_rows=cfg.fixed_tag_rows, pairs=cfg.interpolation_pairs,
                           steps=cfg.interpolation_steps, batch=cfg.batch)
    if tagger is None:
        tagger, tag_cfg, reason = load_tagger(tagger_spec, cfg.tagger)
    else:
        tag_cfg, reason = read_tagger_spec(tagger_spec)[0], ""
    metrics, detail = evaluate(G, sampler, cfg, data, detect, tagger, tag_cfg, reason)
    metrics = {"step": step, **metrics}
    atomic_write_json(cfg.out.summary, metrics)
    atomic_write_json(cfg.out.metrics, headline(metrics))
    atomic_write_json(cfg.out.attributes, detail)
    summary = RenderSummary(sheets, metrics, step, cfg.out.samples)
    for line in summary.lines():
        log.info("render: %s", line)
    return summary
