"""The export stage (DVC stage `export`): generator.safetensors -> fp32 ONNX + the web variant +
the page's manifest (tags, groups, noise algorithm) + a report (sizes, parity). The CPU speed
goes to the untracked run report (reports/runs/export.json), not into the DVC metric."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from tasks.artifacts.generator import load_generator
from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, HAIR_STYLES, INDEPENDENT_SLICE, MGM_TAGS
from tasks.errors import DataError
from tasks.export.honesty import agreement, training_tags
from tasks.export.noise import NOISE_ALGORITHM
from tasks.export.onnx_export import INPUTS, OUTPUT, export_onnx, fast_tail, fold_batchnorm, make_variant
from tasks.export.parity import ParityError, compare, inputs_for, parity_tags, run_onnx, session
from tasks.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes
from tasks.params.export import ExportConfig
from tasks.reports import write_run_report

log = logging.getLogger(__name__)
MANIFEST_FORMAT = 2  # 2: training (which tags the generator learned) and agreement (render)
MB = 1_000_000


def tag_groups() -> list[dict]:
    """The page's control groups, from the tag layout (tasks.artifacts.tags): two one-hot groups (radio buttons)
    and the independent tags split into hair style and the rest (checkboxes)."""
    styles = INDEPENDENT_SLICE.start + len(HAIR_STYLES)
    return [
        {"name": "hair_color", "label": "Hair colour", "kind": "one-hot", "start": HAIR_COLOR_SLICE.start,
         "stop": HAIR_COLOR_SLICE.stop},
        {"name": "hair_style", "label": "Hair style", "kind": "independent", "start": INDEPENDENT_SLICE.start,
         "stop": styles},
        {"name": "other", "label": "Face & accessories", "kind": "independent", "start": styles,
         "stop": INDEPENDENT_SLICE.stop},
        {"name": "eye_color", "label": "Eye colour", "kind": "one-hot", "start": EYE_COLOR_SLICE.start,
         "stop": EYE_COLOR_SLICE.stop},
    ]


def one_hot_groups() -> tuple[tuple[int, int], ...]:
    return tuple((g["start"], g["stop"]) for g in tag_groups() if g["kind"] == "one-hot")


def manifest(cfg: ExportConfig, model_cfg, web_bytes: bytes, meta: dict, training: dict | None = None,
             agree: dict | None = None) -> dict:
    """The page's manifest. `training` (tasks.export.honesty.training_tags) and `agree` (its `agreement`)
    are null when not given (run_export without the stage's inputs): the page then says the tags'
    training is not recorded."""
    import json

    rel = os.path.relpath(Path(cfg.out.web).resolve(), Path(cfg.out.manifest).resolve().parent)
    try:
        freqs = json.loads(meta["sampler"]) if meta.get("sampler") else None
    except ValueError:
        freqs = None
    return {
        "format": MANIFEST_FORMAT, "model": Path(rel).as_posix(), "bytes": len(web_bytes),
        "sha256": sha256_bytes(web_bytes), "variant": cfg.variant, "opset": cfg.opset,
        "inputs": list(INPUTS), "output": OUTPUT, "z_dim": model_cfg.z_dim, "n_tags": model_cfg.n_tags,
        "image_size": model_cfg.image_size, "tags": list(MGM_TAGS), "groups": tag_groups(),
        "frequencies": freqs, "noise": NOISE_ALGORITHM, "step": meta.get("step"),
        "training": training, "agreement": agree,
    }


def cpu_ms_per_image(model: bytes, z_dim: int, n_tags: int, runs: int = 5) -> float:
    z, t = inputs_for([1], [[0.0] * n_tags], z_dim)
    sess = session(model)
    run_onnx(sess, z, t)
    t0 = time.perf_counter()
    for _ in range(runs):
        run_onnx(sess, z, t)
    return (time.perf_counter() - t0) * 1000 / runs


def metrics(report: dict) -> dict:
    """The headline numbers (export.out.metrics, the DVC metric): the web model's size and its
    largest difference from PyTorch on the parity seeds; the rest: the report."""
    return {"web_mb": report["web_mb"], "parity": report["parity_web"]["max_abs"]}


def run_export(cfg: ExportConfig, generator: str | Path, data: str | Path | None = None,
               attributes: str | Path | None = None) -> dict:
    """Write out.onnx, out.web, out.manifest, out.report and out.metrics; return the report.
    `data` (the training dataset) and `attributes` (render's attributes.json) tell the page which
    tags the generator learned and how well it follows them (the stage always hands both).
    Raises ParityError when onnxruntime disagrees with PyTorch beyond the tolerances."""
    t0 = time.perf_counter()
    g, model_cfg, meta = load_generator(generator)  # a bad generator file first: its error names it
    training = training_tags(data) if data is not None else None
    agree = agreement(attributes) if attributes is not None else None
    if model_cfg.n_tags != len(MGM_TAGS):
        raise DataError(f"{generator}: the generator takes {model_cfg.n_tags} tags, the tag schema has {len(MGM_TAGS)}")
    src, folded = fold_batchnorm(g) if cfg.fold_batchnorm else (g, 0)
    src, tail = fast_tail(src) if cfg.fast_tail else (src, False)
    if cfg.fast_tail and not tail:
        log.warning("export: fast_tail: the generator does not end in PixelShuffle + output conv; exported as is")
    proto = export_onnx(src, model_cfg.z_dim, model_cfg.n_tags, cfg.opset)
    fp32 = proto.SerializeToString()
    web = make_variant(proto, cfg.variant).SerializeToString() if cfg.variant != "none" else fp32

    p = cfg.parity
    seeds = [(p.seed + i) & 0xFFFFFFFF for i in range(p.samples)]
    tags = [parity_tags(i, model_cfg.n_tags, one_hot_groups()) for i in range(p.samples)]
    par_fp32 = compare(g, fp32, seeds, tags, model_cfg.z_dim)
    par_web = compare(g, web, seeds, tags, model_cfg.z_dim) if web is not fp32 else par_fp32
    log.info("export: parity fp32 max %.2e mean %.2e; %s max %.2e mean %.2e (max pixel %d)", par_fp32["max_abs"],
             par_fp32["mean_abs"], cfg.variant, par_web["max_abs"], par_web["mean_abs"], par_web["max_pixel"])
    if par_fp32["max_abs"] > p.atol:
        raise ParityError(f"fp32 ONNX differs from PyTorch by up to {par_fp32['max_abs']:.3g} "
                          f"(export.parity.atol {p.atol})")
    if par_web["max_abs"] > p.variant_atol or par_web["mean_abs"] > p.variant_mean_atol:
        raise ParityError(f"{cfg.variant} ONNX differs from PyTorch by up to {par_web['max_abs']:.3g}, mean "
                          f"{par_web['mean_abs']:.3g} (export.parity.variant_atol {p.variant_atol}, "
                          f"variant_mean_atol {p.variant_mean_atol})")

    atomic_write_bytes(cfg.out.onnx, fp32)
    atomic_write_bytes(cfg.out.web, web)
    man = manifest(cfg, model_cfg, web, meta, training, agree)
    atomic_write_json(cfg.out.manifest, man)
    web_mb = len(web) / MB
    if web_mb > cfg.max_mb:
        log.warning("export: the web model is %.1f MB, over the %.1f MB goal (try export.variant: int8)", web_mb,
                    cfg.max_mb)
    report = {
        "generator": str(generator), "step": meta.get("step"), "image_size": model_cfg.image_size,
        "parameters": sum(t.numel() for t in g.parameters()), "opset": cfg.opset, "variant": cfg.variant,
        "batchnorm_folded": folded, "fast_tail": tail, "fp32_mb": round(len(fp32) / MB, 3), "web_mb": round(web_mb, 3),
        "goal_mb": cfg.max_mb, "within_goal": web_mb <= cfg.max_mb,
        "parity_fp32": par_fp32, "parity_web": par_web,
        "tags_trained": None if training is None else [t for t, ok in zip(MGM_TAGS, training["trained"]) if ok],
    }
    atomic_write_json(cfg.out.report, report)
    atomic_write_json(cfg.out.metrics, metrics(report))
    timing = {"cpu_ms_per_image": round(cpu_ms_per_image(web, model_cfg.z_dim, model_cfg.n_tags), 2),
              "seconds": round(time.perf_counter() - t0, 2)}
    write_run_report("export", timing)
    log.info("export: %s (%.1f MB fp32), %s (%.1f MB %s, goal %.0f MB) in %.1f s; onnxruntime CPU %.1f ms/image",
             cfg.out.onnx, report["fp32_mb"], cfg.out.web, web_mb, cfg.variant, cfg.max_mb, timing["seconds"],
             timing["cpu_ms_per_image"])
    return {**report, **timing}


class ExportSummary:
    def __init__(self, report: dict, cfg: ExportConfig):
        self.report, self.cfg = report, cfg

    def lines(self) -> list[str]:
        r, pw = self.report, self.report["parity_web"]
        trained = r.get("tags_trained")
        tags = [f"the page offers {len(trained)} of {len(MGM_TAGS)} tags (the others: no training face had them)"
                ] if trained is not None else []
        return [f"{self.cfg.out.web}: {r['web_mb']:.2f} MB {self.cfg.variant} (goal <= {self.cfg.max_mb:g}), "
                f"{self.cfg.out.onnx}: {r['fp32_mb']:.2f} MB fp32",
                f"parity vs PyTorch ({pw['samples']} seeds): fp32 max {r['parity_fp32']['max_abs']:.2e}; "
                f"{self.cfg.variant} max {pw['max_abs']:.2e}, mean {pw['mean_abs']:.2e}, max pixel {pw['max_pixel']}"
                ] + tags

    def markdown(self) -> str:
        r, cfg = self.report, self.cfg
        return "\n".join([
            "# export", "", "| file | MB |", "|---|---|",
            f"| {cfg.out.onnx} (fp32) | {r['fp32_mb']:.2f} |",
            f"| {cfg.out.web} ({cfg.variant}) | {r['web_mb']:.2f} (goal <= {cfg.max_mb:g}) |", "",
            *self.lines()[1:], "", f"onnxruntime CPU: {r['cpu_ms_per_image']:.1f} ms/image (this machine)"]) + "\n"


def run_stage(cfg: ExportConfig, data: str, attributes: str) -> ExportSummary:
    """The DVC stage: the configured (or the train stage's) generator to ONNX, with what its training
    data (`data`) and the render stage's measurements (`attributes`) say about each tag."""
    src = Path(cfg.generator)
    log.info("export: %s -> %s (+ %s variant %s)", src, cfg.out.onnx, cfg.variant, cfg.out.web)
    return ExportSummary(run_export(cfg, src, data, attributes), cfg)
