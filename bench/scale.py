"""How every stage's cost grows with the number of images, through the pipeline's command line.

For each N (default 1k and 4k; the 1k run is always made, as the baseline of the same invocation; --base
changes it):
1. N synthetic posts with faces (bench/synth.py: made once for the largest N, each N a hard-linked view);
2. a throwaway project copy (tests' make_copy: the committed .dvc/config with its cache.type, and the
   Makefile's .dvc/config.local) whose params.yaml points the folder source at them;
3. `dvc repro <stage>` for scrape, detect, review, tag, release, train, render and export in turn,
   each measured as a whole process tree: wall, CPU, the largest process's peak RSS (ru_maxrss: DVC's or
   the stage's), the stage process's own and its largest worker's (reports/runs/<stage>.json),
   the tree's summed RSS (sampled), the stage's own wall (reports/runs/<stage>.json; the rest is DVC),
   the files and bytes of its outs (dvc.lock) and what it added to the workspace and DVC's cache;
4. the whole workspace's no-op `dvc repro` (median of 3), the files DVC tracks per 1,000 images;
5. `dvc push` + `dvc pull` into a fresh clone, to a directory remote against `cp -r` of the same outs,
   and to SeaweedFS's S3 gateway on 127.0.0.1 against one tar of them as a single object;
6. after the largest N, the base N again (the control run: `1k'` in the growth table, unless --no-control),
   so that the growth is against the mean of a base run before and one after, and a machine that slowed
   down meanwhile shows as a slower control, not as a stage's growth; each command's row also says what
   the machine's cores did meanwhile: the hypervisor's steal, iowait, and other processes' CPU;
7. with --dask, detect and tag again on a Dask cluster of separate `dask scheduler` and `dask worker`
   processes on 127.0.0.1 (bench/scale_dask.py), against the process pool / local runner of step 3.

train runs its whole stage with a tiny model for 4 steps: the row is the training-dataset export
plus the loader reading it (models/data.py), which is what grows with N; `export_s` is the time from
"Running stage 'train'" to the export's log line, `load_s` to the loader's.

    python bench/scale.py [--sizes 1k,4k] [--profile] [--no-transfer | --local-transfer-only] [--dask] [--synth-dir DIR] [--keep]
                          [--folder-import copy|reference] [--stages scrape,detect]
    python bench/scale.py --sizes 1k,4k,16k,64k      # the large run, on an idle machine (hours)

Prints one table per N — wall; `dvc<` DVC before the command (the stage's and its upstream's status:
hashing deps); `run` the command itself, interpreter start included; `dvc>` DVC after it (hashing and
caching the outs, dvc.lock); ms per image; CPU; peak RSS of the largest process and of the tree; the
outs' files and MB; what the cache grew by; the load average — and the growth against 1k, with each stage's peak-RSS growth per more image and its
straight line to 64k and 1M against the memory goal (<= 2 GB at 64k); writes bench/out/scale-<sizes>.json (and with
--profile, bench/out/profile-<N>-<stage>.txt: py-spy over dvc and the stage's processes)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import synth  # noqa: E402
from scale_measure import (cache_objects, free_bytes, lock_outs, machine, measured, pyspy_summary,  # noqa: E402
                           tracked_files, usage)
from scale_dask import dask_lines, dask_rows  # noqa: E402
from scale_transfer import local_round_trip, s3_round_trip  # noqa: E402

try:  # tests/ is being regrouped: the project-copy helpers move to tests/support
    from tests.support.project import env, make_copy  # type: ignore[import-not-found]  # noqa: E402
except ImportError:
    from tests.support.project import env, make_copy  # noqa: E402

log = logging.getLogger("bench.scale")
OUT = HERE / "out"
STAGES = ["scrape", "detect", "review", "tag", "release", "train", "render", "export"]
MEMORY_GOAL_GB = 2.0  # peak RSS of any stage at 64 k images
FIXED = {"render", "export"}  # their work does not depend on N (a fixed number of samples)
MB = 1e6
DISK_PER_IMAGE = 0.2e6  # bytes a run writes per image besides the store's copy of its input: crops, review
# sheet, exports (94 KB measured at 16 k, the whole DAG; DVC's cache links the same inodes), with room
SMALL_MODEL = {
    "model": {"g_channels": 8, "g_blocks": 1, "g_up_channels": [], "d_channels": [8, 16, 32]},
    "optim": {"batch": 8},
    "loop": {"steps": 4, "checkpoint_every": 4, "log_every": 2, "threads": 1, "progress": False},
}


def parse_size(s: str) -> int:
    s = s.strip().lower()
    return int(float(s[:-1]) * 1000) if s.endswith("k") else int(s)


def parse_sizes(text: str, base: int) -> list[int]:
    return sorted({parse_size(s) for s in text.split(",")} | {base})


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def bench_params(folder: Path, n: int, folder_import: str = "copy") -> dict:
    cores = os.cpu_count() or 1
    return {
        "scrape": {"source": "folder", "folder": str(folder), "folder_import": folder_import,
                   "filters": {"min_width": 256, "min_height": 256, "max_images": max(10_000, 2 * n)}},
        "detect": {"workers": cores, "min_face": 64, "box_scale": 1.25},  # params.yaml's, not the tests' TINY
        "train": SMALL_MODEL,
        "render": {"eval_samples": 64, "batch": 32, "grid": 4, "variations": 2},
    }


def stage_report(project: Path, stage: str) -> dict:
    p = project / "reports" / "runs" / f"{stage}.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_stage(project: Path, stage: str, n: int, logs: Path, e: dict, profile: bool) -> dict:
    cache_before = cache_objects(project)
    cmd = ["dvc", "repro", stage]
    raw = logs / f"pyspy-{stage}.txt"
    if profile:
        cmd = ["py-spy", "record", "--subprocesses", "-r", "25", "--format", "raw", "-o", str(raw), "--"] + cmd
    marks = {"start": rf"Running stage '{stage}'", "done": rf"{stage}: done in [\d.]+ s"}
    if stage == "train":
        marks |= {"export": r"train dataset: \d+ faces", "load": r"models\.data: data: \d+ faces"}
    m = measured(cmd, project, e, logs / f"{stage}.log", marks)
    rep = stage_report(project, stage)
    outs = lock_outs(project, stage)
    ws = usage([project / o["path"] for o in outs])
    cache_after = cache_objects(project)
    start, done = m.marks.get("start"), m.marks.get("done")
    row = {**m.as_dict(), "stage_wall_s": rep.get("wall_s"),
           # the stage's own process and its largest worker process (tasks/stage.py), apart from DVC's
           "stage_rss_mb": rep.get("peak_rss_mb"), "workers_rss_mb": rep.get("workers_peak_rss_mb"),
           # DVC before the command (status of the stage and its upstream: hashing deps), the command (with
           # the interpreter's start and imports), DVC after it (hashing and caching outs, dvc.lock)
           "dvc_before_s": start, "run_s": round(done - start, 2) if start and done else None,
           "dvc_after_s": round(m.wall_s - done, 2) if done else None,
           "s_per_image": m.wall_s / n, "out_files": sum(o["nfiles"] for o in outs),
           "out_bytes": sum(o["size"] or 0 for o in outs), "workspace_disk": ws.disk,
           "cache_added_files": cache_after.files - cache_before.files,
           "cache_added_disk": cache_after.disk - cache_before.disk}
    if stage == "train" and "start" in m.marks:
        for k in ("export", "load"):
            if k in m.marks:
                row[f"{k}_s"] = round(m.marks[k] - m.marks["start"], 2)
    if profile and raw.is_file():
        OUT.mkdir(exist_ok=True)
        (OUT / f"profile-{label(n)}-{stage}.txt").write_text(pyspy_summary(raw))
    log.info("%s at %s: %.1f s wall, %.1f MB peak process, %.1f MB tree", stage, label(n), m.wall_s, m.max_rss_mb,
             m.tree_rss_mb)
    return row


def run_size(n: int, all_images: Path, work: Path, args) -> dict:
    base = work / label(n)
    view = synth.view(all_images, base / "images", n)  # hard links: no bytes
    need = n * DISK_PER_IMAGE + (usage([view]).bytes if args.folder_import == "copy" else 0) + 3e9
    if free_bytes(work) < need:
        shutil.rmtree(base)
        return {"n": n, "skipped": f"needs ~{need / 1e9:.0f} GB free in {work}, has {free_bytes(work) / 1e9:.0f}"}
    project = make_copy(base / "project", bench_params(view, n, args.folder_import))
    (project / ".dvc" / "config.local").unlink()  # the Makefile's instead, as `make demo` sets it
    measured(["make", "-o", "venv", "-f", str(ROOT / "Makefile"), f"VENV={Path(sys.executable).parent.parent}",
              ".dvc/config.local"], project, env(), base / "logs" / "config.log")
    logs = base / "logs"
    e = env()
    measured(["dvc", "repro", "fetch"], project, e, logs / "fetch.log")
    res: dict = {"n": n, "stages": {}, "folder_import": args.folder_import,
                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for stage in args.stages:
        res["stages"][stage] = run_stage(project, stage, n, logs, e, args.profile)
    ran = set(args.stages)  # a stage that did not run has the committed demo's metrics in the copy: not this run's
    res["counts"] = {"images": read_json(project / "data/raw/metrics.json") if "scrape" in ran else {},
                     "faces": read_json(project / "data/faces/metrics.json") if "detect" in ran else {},
                     "review": read_json(project / "review/metrics.json") if "review" in ran else {},
                     "tags": read_json(project / "data/tags/metrics.json") if "tag" in ran else {}}
    target = [] if args.stages == STAGES else [args.stages[-1]]  # a subset: its last stage and what it follows
    noop = [measured(["dvc", "repro", *target], project, e, logs / f"noop-{i}.log").wall_s for i in range(3)]
    res["noop_repro_target"] = target[0] if target else "the whole DAG"
    res["noop_repro_s"] = round(statistics.median(noop), 2)
    res["noop_repro_runs"] = noop
    tracked = tracked_files(project)
    cobj = cache_objects(project)
    res["dvc"] = {"tracked_files": tracked, "tracked_per_1k_images": round(tracked / n * 1000, 1),
                  "cache_objects": cobj.files, "cache_objects_per_1k_images": round(cobj.files / n * 1000, 1),
                  "cache_disk": cobj.disk}
    res["disk"] = {"input": vars(usage([view])), "raw_store": vars(usage([project / "data/raw/images"])),
                   "dvc_cache": vars(cobj), "project": vars(usage([project]))}
    if not args.no_transfer:
        need = (2 if args.local_transfer_only else 3) * cobj.disk + 2e9  # the round trips hold 2 (3) copies at once
        if free_bytes(work) < need:
            res["transfer"] = {"skipped": f"needs ~{need / 1e9:.0f} GB free"}
        else:
            moved = ["fetch", *target] if target else []  # what this run built: fetch (above) and the stages'
            res["transfer"] = {"local": local_round_trip(project, base, e, moved)}
            if not args.local_transfer_only:
                res["transfer"]["s3"] = s3_round_trip(project, base, e, moved)
    if args.dask and {"detect", "tag"} <= set(args.stages):
        res["dask"] = dask_rows(project, n, logs, e, os.cpu_count() or 1, run_stage)
    res["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return res


def table(res: dict) -> str:
    n = res["n"]
    control = " (the control run, made last)" if res.get("control") else ""
    lines = [f"\nN = {n:,} images{control} ({res['counts']['images'].get('images', '?')} kept by scrape, "
             f"{res['counts']['faces'].get('kept', '?')} faces kept by detect)",
             f"{'stage':8} {'wall s':>8} {'dvc<':>6} {'run s':>7} {'dvc>':>6} {'ms/img':>7} {'CPU s':>7} {'proc MB':>8} "
             f"{'tree MB':>8} {'stage MB':>8} {'wrkr MB':>7} {'files':>7} {'out MB':>8} {'cache+MB':>8} {'load':>9} "
             f"{'steal%':>6} {'iow%':>5} {'others s':>8}"]
    for stage, r in res["stages"].items():
        extra = f"  export {r['export_s']} s, loader {r.get('load_s', '?')} s" if "export_s" in r else ""
        mach = r.get("machine", {})  # steal: the hypervisor's share; others: other processes' CPU meanwhile
        lines.append(f"{stage:8} {r['wall_s']:8.1f} {r['dvc_before_s'] or 0:6.1f} {r['run_s'] or 0:7.1f} "
                     f"{r['dvc_after_s'] or 0:6.1f} "
                     f"{1000 * r['s_per_image']:7.1f} {r['cpu_s']:7.1f} {r['max_rss_mb']:8.0f} {r['tree_rss_mb']:8.0f} "
                     f"{r.get('stage_rss_mb') or 0:8.0f} {r.get('workers_rss_mb') or 0:7.0f} {r['out_files']:7d} {r['out_bytes'] / MB:8.1f} {r['cache_added_disk'] / MB:8.1f} "
                     f"{r['load'][0]:4.1f}-{r['load'][1]:<4.1f} {100 * mach.get('steal_share', 0):6.1f} "
                     f"{100 * mach.get('iowait_share', 0):5.1f} {mach.get('others_cpu_s', 0):8.1f}{extra}")
    d = res["dvc"]
    lines.append(f"no-op dvc repro ({res.get('noop_repro_target', 'the whole DAG')}): {res['noop_repro_s']} s; DVC tracks {d['tracked_files']:,} files "
                 f"({d['tracked_per_1k_images']} per 1,000 images), {d['cache_objects']:,} cache objects "
                 f"({d['cache_objects_per_1k_images']} per 1,000), cache {d['cache_disk'] / MB:.0f} MB")
    disk = res["disk"]
    inp = disk["input"]["disk"]
    lines.append(f"disk (scrape.folder_import: {res.get('folder_import', 'copy')}): input {inp / MB:.0f} MB, raw store "
                 f"{disk['raw_store']['disk'] / MB:.0f} MB, DVC cache {disk['dvc_cache']['disk'] / MB:.0f} MB, whole "
                 f"project {disk['project']['disk'] / MB:.0f} MB ({disk['project']['disk'] / inp:.2f}x the input)")
    t = res.get("transfer", {})
    if "local" in t:
        lo = t["local"]
        lines.append(f"directory remote: push {lo['push_s']} s + pull {lo['pull_s']} s vs cp -r {lo['plain']['total_s']} s"
                     f": plain/dvc {lo['plain_over_dvc']} ({lo['remote_files']:,} files; pulled outs identical "
                     f"{lo['pulled_outs_identical']})")
    if "s3" in t:
        s3 = t["s3"]
        lines.append(f"S3 (SeaweedFS): push {s3['push_s']} s + pull {s3['pull_s']} s ({s3['objects']:,} objects) vs one tar "
                     f"object {s3['tar_object']['total_s']} s: tar/dvc {s3['tar_over_dvc']}; vs cp -r: "
                     f"{round(lo['plain']['total_s'] / (s3['push_s'] + s3['pull_s']), 3)}")
    if t and "local" not in t:
        lines.append(f"transfer: {t}")
    return "\n".join(lines)


def name(r: dict) -> str:
    return label(r["n"]) + ("'" if r.get("control") else "")  # 1k': the control run of the base size, made last


def growth(results: list[dict], n_base: int) -> str:
    ns = [r for r in results if "stages" in r]
    bases = [r for r in ns if r["n"] == n_base]
    base = bases[0]
    more = [r for r in ns if r["n"] != n_base]
    head = (f"{'stage':8} " + " ".join(f"{'ms/img ' + name(r):>11}" for r in ns) + " "
            + " ".join(f"{'x ' + label(r['n']):>6}" for r in more) + " "
            + " ".join(f"{'cpu x ' + label(r['n']):>9}" for r in more) + " "
            + " ".join(f"{'MB ' + name(r):>7}" for r in ns) + " "
            + " ".join(f"{'stage ' + name(r):>9}" for r in ns))
    lines = [f"\nper image against the {label(n_base)} run"
             + (f"s' mean ({len(bases)}: before and after the others)" if len(bases) > 1 else "")
             + ": wall (x) and CPU (cpu x); the largest process's peak RSS (MB: DVC's or the stage's) and the stage "
             "process's own (stage)", head]
    for stage in base["stages"]:
        b = statistics.mean(r["stages"][stage]["s_per_image"] for r in bases)
        bc = statistics.mean(r["stages"][stage]["cpu_s"] for r in bases) / n_base
        lines.append(f"{stage:8} " + " ".join(f"{1000 * r['stages'][stage]['s_per_image']:11.2f}" for r in ns) + " "
                     + " ".join(f"{r['stages'][stage]['s_per_image'] / b:6.2f}" for r in more) + " "
                     + " ".join(f"{r['stages'][stage]['cpu_s'] / r['n'] / bc:9.2f}" for r in more) + " "
                     + " ".join(f"{r['stages'][stage]['max_rss_mb']:7.0f}" for r in ns) + " "
                     + " ".join(f"{r['stages'][stage].get('stage_rss_mb') or 0:9.0f}" for r in ns)
                     + ("   (fixed work: per-image figures fall with N)" if stage in FIXED else ""))
    lines.append("no-op repro s: " + ", ".join(f"{name(r)} {r['noop_repro_s']}" for r in ns))
    lines += memory_lines(base, [r for r in more if not r.get("control")])
    for r in more:  # the goal is on the growth: files added per 1,000 more images (the fixed files aside)
        added = r["dvc"]["tracked_files"] - base["dvc"]["tracked_files"]
        lines.append(f"DVC-tracked files {label(n_base)} -> {label(r['n'])}: {base['dvc']['tracked_files']} -> "
                     f"{r['dvc']['tracked_files']}, +{1000 * added / (r['n'] - n_base):.2f} per 1,000 more images")
    return "\n".join(lines)


def memory_lines(base: dict, more: list[dict]) -> list[str]:
    """The memory goal (peak RSS bounded, <= 2 GB at 64 k): per stage, the largest process's peak RSS
    growth per more image from the base to the largest N, and where that line reaches at 64 k and 1 M."""
    if not more:
        return []
    top = max(more, key=lambda r: r["n"])
    lines = [f"peak RSS (largest process) {label(base['n'])} -> {label(top['n'])}: growth per more image, "
             f"and the straight line to 64k and 1M (goal: <= {MEMORY_GOAL_GB:g} GB at 64k, flat; a line from small N "
             "overstates where a bounded buffer is still filling: detect's open crop shard, train's crop cache)"]
    for stage in base["stages"]:
        a, b = base["stages"][stage]["max_rss_mb"], top["stages"][stage]["max_rss_mb"]
        per = (b - a) * 1e6 / (top["n"] - base["n"])  # bytes per more image
        at = {n: (b * 1e6 + per * (n - top["n"])) / 1e9 for n in (64_000, 1_000_000)}
        verdict = "met" if max(b / 1e3, at[64_000]) <= MEMORY_GOAL_GB else "NOT met"
        lines.append(f"  {stage:8} {a:7.0f} -> {b:7.0f} MB  {per / 1e3:+6.1f} KB/image  64k {at[64_000]:5.2f} GB  "
                     f"1M {at[1_000_000]:5.2f} GB  {verdict}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,4k", help="comma-separated N (1k = 1000); the base is always included")
    ap.add_argument("--base", default="1k", help="the N every other is compared with (default 1k)")
    ap.add_argument("--profile", action="store_true", help="run each stage under py-spy (bench/out/profile-*.txt)")
    ap.add_argument("--no-transfer", action="store_true", help="skip the push/pull round trips")
    ap.add_argument("--local-transfer-only", action="store_true",
                    help="the directory remote's round trip only, not the S3 one (which holds the outs ~4 times over "
                         "on the disk at its peak: the pushed objects, a tar, the tar got back and unpacked)")
    ap.add_argument("--dask", action="store_true", help="then detect and tag again on a `dask scheduler` + "
                    "`dask worker` cluster on 127.0.0.1, one worker process per core (bench/scale_dask.py)")
    ap.add_argument("--synth-dir", type=Path, help="keep the synthetic images here, for later runs (default: scratch)")
    ap.add_argument("--work", type=Path, default=None, help="where the scratch directory goes (default: the system's temp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--no-control", action="store_true", help="skip the base size's second run, made after the "
                                                              "largest to tell a slower machine from a slower stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder-import", choices=("copy", "reference"), default="copy",
                    help="scrape.folder_import: copy the images into the store's packs (default, as params.yaml) "
                         "or reference them in the synthetic folder")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"the stages to run, in DAG order (default all: {','.join(STAGES)}); the no-op repro, the "
                         f"transfers and --dask then cover what these built")
    args = ap.parse_args()
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not args.stages or [s for s in args.stages if s not in STAGES] or args.stages != sorted(args.stages, key=STAGES.index):
        ap.error(f"--stages: a comma-separated list of {', '.join(STAGES)}, in that order")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    n_base = parse_size(args.base)
    sizes = parse_sizes(args.sizes, n_base)
    work = Path(tempfile.mkdtemp(prefix="moeflow-scale-", dir=args.work))
    report = {"sizes": sizes, "machine": machine(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "profiled": args.profile, "results": []}
    tag = ("-profiled" if args.profile else "") + ("-reference" if args.folder_import == "reference" else "")
    if args.stages != STAGES:
        tag += "-" + "-".join(args.stages)
    out_path = OUT / f"scale-{'-'.join(label(n) for n in sizes)}{tag}.json"
    OUT.mkdir(exist_ok=True)
    try:
        images = args.synth_dir or work / "synth"
        report["synth"] = synth.synthesise(images, max(sizes), args.seed)
        log.info("synthetic images: %s", report["synth"])
        runs = sizes + ([n_base] if len(sizes) > 1 and not args.no_control else [])
        for i, n in enumerate(runs):
            t0 = time.perf_counter()
            res = run_size(n, images, work, args)
            if i == len(sizes):
                res["control"] = True
            res["total_s"] = round(time.perf_counter() - t0, 1)
            report["results"].append(res)
            out_path.write_text(json.dumps(report, indent=1) + "\n")
            if "stages" in res:
                print(table(res) + dask_lines(res), flush=True)
            else:
                print(f"\nN = {n:,}: skipped: {res['skipped']}", flush=True)
        report["machine_end"] = machine()
        out_path.write_text(json.dumps(report, indent=1) + "\n")
        print(growth(report["results"], n_base))
        print(f"\n{out_path.relative_to(ROOT)}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
