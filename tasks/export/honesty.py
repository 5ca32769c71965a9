"""What the page may honestly offer (the manifest's `training` and `agreement`): per tag, on how many
training faces it was known and on how many it was on (from the training dataset the generator
learned from, train.out.data), and how well the generator follows each attribute (render's
attributes.json, render.out.attributes). A tag no training face had on (unknown everywhere, or
known and always off) was never a condition the generator learned: the page disables it."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.artifacts.tags import MGM_TAGS
from tasks.artifacts.trainset import TRAIN, ExportFile
from tasks.errors import DataError


def training_tags(data: str | Path) -> dict:
    """{"faces", "tagger", "known": [per tag], "positive": [per tag], "trained": [per tag]} over the
    dataset's training split (the faces the generator was trained on). Reads the ids, attributes and
    split columns only: the crops never leave the file (memory does not grow with the dataset's crops)."""
    export = ExportFile(data)
    a = export.attributes[export.split == TRAIN]
    if a.ndim != 2 or a.shape[1] != len(MGM_TAGS):
        raise DataError(f"{data}: attributes of {a.shape[1] if a.ndim == 2 else '?'} tags, the tag schema has "
                        f"{len(MGM_TAGS)}")
    known = (a >= 0).sum(0).astype(int)
    positive = (a == 1).sum(0).astype(int)
    return {"faces": int(len(a)), "tagger": export.tagger, "known": known.tolist(), "positive": positive.tolist(),
            "trained": [bool(p > 0) for p in positive]}


def _num(v) -> float | None:
    return None if v is None else round(float(v), 4)


def agreement(attributes: str | Path) -> dict:
    """render's attributes.json as the page shows it: per attribute (a colour group under its group's
    name, every other tag under its own) the agreement on generated samples, how many the tagger
    could read, the same tagger's agreement with real crops (the ceiling), or why it is not scored."""
    path = Path(attributes)
    try:
        detail = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist (run the render stage first)") from None
    except ValueError as e:
        raise DataError(f"{path}: not JSON ({e})") from None
    rows = detail.get("attributes") if isinstance(detail, dict) else None
    if not rows:  # render had no tagger: nothing was measured
        return {"tagger": None, "model_px": None, "attributes": {},
                "reason": "the render stage measured no attribute (no tagger)"}
    out = {}
    for name, row in rows.items():
        s, c = row.get("samples", {}), row.get("real", {})
        out[name] = {"agreement": _num(s.get("agreement")), "read": int(s.get("read", 0)),
                     "known": int(s.get("known", 0)), "ceiling": _num(c.get("agreement"))}
        if "reason" in row:
            out[name]["reason"] = row["reason"]
    return {"tagger": detail.get("tagger"), "model_px": detail.get("model_px"), "attributes": out}
