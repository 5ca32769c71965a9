"""The dataset card: one Markdown page describing what a `dvc repro` produced.

It is written after the DAG has run (it records the DVC data version, so it cannot be a
stage of the DAG it describes): by the `pipeline` flow at its end and by `make demo`.

    python -m tasks.tools.card [--params params.yaml] [--out reports/dataset_card.md]"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from tasks.artifacts.images import read_manifest, read_rejected
from tasks.errors import MoeflowError, one_line_errors
from tasks.fileio import atomic_write_text
from tasks.params.all import load_params
from tasks.render.report import metric_lines
from tasks.tag.summary import card_section as tag_card_section
from tasks.typed import to_dict

log = logging.getLogger(__name__)

DEFAULT_OUT = "reports/dataset_card.md"


def _json(path: str | Path) -> dict | None:
    p = Path(path)
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except ValueError:
        return None


def _flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and len(obj) > 8:
        rows.append((prefix, f"[{len(obj)} values]"))
    else:
        rows.append((prefix, obj))
    return rows


def _table(obj: dict | None, missing: str, limit: int = 60) -> str:
    if obj is None:
        return f"_{missing}_\n"
    rows = _flatten(obj)
    body = "\n".join(f"| {k} | {v if not isinstance(v, float) else round(v, 4)} |" for k, v in rows[:limit])
    more = f"\n\n_… {len(rows) - limit} more in the file_" if len(rows) > limit else ""
    return f"| key | value |\n|---|---|\n{body}{more}\n"


def _quality(metrics: dict | None) -> str:
    if metrics is None:
        return "_no render metrics yet_\n"
    head = f"EMA generator after step {metrics.get('step')}, {metrics.get('samples')} samples at {metrics.get('model_px')} px:\n\n"
    return head + "".join(f"- {line}\n" for line in metric_lines(metrics))


def data_version(root: Path) -> dict:
    lock = root / "dvc.lock"
    version = {"dvc_lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None}
    try:
        version["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                               text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dvc.lock", "params.yaml", "dvc.yaml"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
        version["uncommitted_changes"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        version["git_commit"] = None
    return version


def sources(manifest: str) -> dict | None:
    if not Path(manifest).is_file():
        return None
    t = read_manifest(manifest, ["source", "rating", "bytes"])
    return {"images": t.num_rows, "by_source": dict(collections.Counter(t.column("source").to_pylist())),
            "by_rating": dict(collections.Counter(str(r) for r in t.column("rating").to_pylist())),
            "bytes": sum(t.column("bytes").to_pylist())}


def opt_outs(s) -> dict | None:
    """Posts left out because their owners (or the user) opted them out, over every scrape run:
    rejected.parquet holds each post's last verdict, whichever run made it."""
    path = Path(s.out.rejected)
    if not path.is_file():
        return None
    reasons = collections.Counter(read_rejected(path, ["reason"]).column("reason").to_pylist())
    return {"noai_header": reasons["noai"], "robots_disallowed": reasons["robots_disallowed"],
            "blocklist_artist": reasons["blocklist_artist"], "blocklist_tag": reasons["blocklist_tag"],
            "blocklisted_artists": list(s.filters.blocklist_artists), "blocklisted_tags": list(s.filters.blocklist_tags),
            "respect_robots": s.http.respect_robots}


def removed_on_request(params) -> str:
    """What optout.csv took out after collection, with counts (tasks.artifacts.optout_log; the log has the details)."""
    from tasks.artifacts.optout_log import card_section

    s = params.scrape
    try:
        return card_section(s.optout, s.out.optout_log, s.out.rejected)
    except MoeflowError as e:  # a malformed optout.csv: the card says so rather than failing
        return f"_optout.csv cannot be read: {str(e).splitlines()[0]}_\n"


def build_card(params, root: Path = Path(".")) -> str:
    s = params.scrape
    run = _json(Path(params.train.out.dir) / "run.json")
    sections = [
        ("Sources and counts", _table(sources(s.out.manifest), "no scrape manifest yet")),
        ("Last scrape run", _table(_json(s.out.summary), "no scrape summary yet")),
        ("Opt-outs honoured, all scrape runs", _table(opt_outs(s), "no scrape rejections file yet")),
        ("Removed on request", removed_on_request(params)),
        ("Face detection", _table(_json(params.detect.out.summary), "no detect summary yet")),
        ("Review", _table(_json(params.review.out.stats), "no review statistics yet")),
        ("Tag frequencies", tag_card_section(_json(params.tag.out.summary))),
        ("Model", _table(to_dict(params.train.model), "")),
        ("Training run", _table(run, "no training run yet", limit=40)),
        ("Training metrics", _table(_json(Path(params.train.out.dir) / "summary.json"), "no training metrics yet")),
        ("Generator quality", _quality(_json(params.render.out.summary))),
        ("Export", _table(_json(params.export.out.report), "no export report yet")),
        ("DVC data version", _table(data_version(root), "")),
    ]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"# moeflow dataset card\n\nGenerated {now} from the artifacts of `dvc repro` "
            f"(Make.Girls.Moe recipe, arXiv 1708.05509). Source: `{s.source}`.\n")
    return head + "".join(f"\n## {title}\n\n{body}" for title, body in sections)


def write_card(params, out: str | Path = DEFAULT_OUT, root: Path = Path(".")) -> Path:
    text = build_card(params, root)
    atomic_write_text(out, text)
    log.info("dataset card written to %s", out)
    return Path(out)


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.tools.card", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_card(load_params(args.params), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
