"""The release's dataset card (data/release/README.md): the license/notes header, what is in it,
what was left out and why, how to rebuild it. A pure function of the release's inputs: no clock,
no machine path (the project's own card, tasks.tools.card, records the DVC version and the time)."""

from __future__ import annotations

import collections
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tasks.artifacts.images import read_rejected
from tasks.artifacts.optout_log import card_section as removed_on_request
from tasks.artifacts.tags import MGM_TAGS

# reasons in rejected.parquet that are someone's opt-out (tasks.scrape: headers, robots.txt, blocklists, optout.csv)
OPT_OUT_REASONS = ("noai", "robots_disallowed", "blocklist_artist", "blocklist_tag", "optout")


def _counts(title: str, counter: collections.Counter) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))))
    return f"| {title} | n |\n|---|---:|\n{rows}\n"


def collection_opt_outs(rejected: str) -> collections.Counter:
    if not Path(rejected).is_file():
        return collections.Counter()
    reasons = read_rejected(rejected, ["reason"]).column("reason").to_pylist()
    return collections.Counter(r for r in reasons if r in OPT_OUT_REASONS)


def _by_value(column) -> collections.Counter:
    """value -> rows of an Arrow column (a null counts as the value None)."""
    return collections.Counter({c["values"]: c["counts"] for c in pc.value_counts(column).to_pylist()})


def render_card(inputs, header: dict, table: pa.Table) -> str:
    """The card of the release `header` and its rows `table` (the release schema's columns) describe;
    `inputs` (tasks.release.run.ReleaseInputs) names the scrape stage's rejected table, optout.csv
    and the audit log. Counts with Arrow: no Python object per row."""
    per_image = table.select(["sha256", "source", "rating"]).group_by(["sha256", "source", "rating"]).aggregate([])
    images_by_source = _by_value(per_image.column("source"))  # a face's image: its row's rating and source
    faces_by_source = _by_value(table.column("source"))
    ratings = collections.Counter({str(k): v for k, v in _by_value(per_image.column("rating")).items()})
    verdicts = _by_value(table.column("verdict"))
    files = header.get("files", {})
    att = table.column("attributes").combine_chunks().flatten().to_numpy().reshape(table.num_rows, len(MGM_TAGS))
    known_of, ones_of = (att != -1).sum(0), (att == 1).sum(0)
    freq = []
    for j, tag in enumerate(MGM_TAGS):
        known, ones = int(known_of[j]), int(ones_of[j])
        share = f"{ones / known:.3f}" if known else "n/a"
        freq.append(f"| {tag} | {share} | {known} |")
    tagger = header.get("tagger", {})
    crop = header.get("crop", {})
    opt = collection_opt_outs(inputs.rejected)
    parts = [
        f"# {header['title']}\n",
        f"**License:** {header['license']}\n\n{header['notes']}\n",
        f"{header['faces']} faces of {header['images']} images. Release format `{header['format']}`, schema version "
        f"{header['schema_version']}; the header with every column is `release.json`.\n",
        "| file | bytes | sha256 |\n|---|---:|---|\n"
        + "".join(f"| `{name}` | {f['bytes']} | `{f['sha256']}` |\n" for name, f in files.items()),
        "## Sources and counts\n",
        "| source | images | faces |\n|---|---:|---:|\n"
        + "".join(f"| {s} | {images_by_source[s]} | {faces_by_source[s]} |\n" for s in sorted(faces_by_source)),
        _counts("rating (images)", ratings),
        _counts("review verdict (faces)", verdicts)
        + "\nFalse positives struck out by the reviewers are not released.\n",
        "## Opt-outs honoured\n",
        (_counts("left out at collection, by reason", opt) if opt else "_none recorded_\n"),
        "## Removed on request\n",
        removed_on_request(inputs.optout, inputs.optout_log, inputs.rejected),
        "## Attributes\n",
        f"Tagged by `{tagger.get('backend', 'unknown')}` ({tagger.get('backend_reason', 'reason not recorded')}). "
        "Share of the faces whose attribute is known that have it:\n",
        "| attribute | share | faces known |\n|---|---:|---:|\n" + "\n".join(freq) + "\n",
        "## Faces\n",
        f"Crops are {crop.get('size')} px squares of the crop box ({crop.get('resize')}); a box reaching past the "
        f"image is padded with `{crop.get('pad_fill')}`. face_id = sha256 of `sha256|detector|crop box`.\n",
        "## Rebuild\n",
        f"{header['rebuild']}. An image whose bytes changed is rejected (`sha256_mismatch`), never kept; what the "
        "rebuilder's optout.csv names is not fetched.\n",
    ]
    return "\n".join(parts)
