"""What the tag stage says about its run: data/tags/summary.json (what the tags are, per tag, never
how fast), data/tags/metrics.json (the DVC metric: its headline numbers), the log lines, the Prefect
artifact and the dataset card's tag section.

The reference column is Make.Girls.Moe's own attribute priors, copied exactly: the `prob` arrays
of src/Config.js in makegirlsmoe_web, the site's front end (github.com/makegirlsmoe/makegirlsmoe_web,
commit 154fdcf), with which the page samples each attribute of a random character. Config.js
does not say how they were obtained; long hair 0.53, blue eyes 0.28 and glasses 0.05 among
them. Another version of the file (commit 8f93c69) has round UI defaults (0.25, 0.6, 0.3) for
hair style, blush, smile, open mouth and ribbon instead, hence the pinned commit. Config.js calls
twintails `twin_tail`; its groups are in our column order (tasks.artifacts.tags)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tasks.artifacts.tags import MGM_TAGS

MGM_PRIOR_SOURCE = ("makegirlsmoe_web src/Config.js @154fdcf (the web generator's attribute priors: "
                    "github.com/makegirlsmoe/makegirlsmoe_web/blob/154fdcfd86da46a71306313e1d5cdcca7b0d89b5/src/Config.js)")
_HAIR = (0.15968645, 0.21305391, 0.15491921, 0.10523116, 0.07953927, 0.09508879, 0.03567429, 0.07733163,
         0.03157895, 0.01833307, 0.02236442, 0.00537514, 0.00182371)
_STYLE = (0.52989922, 0.37101264, 0.12567589, 0.00291153, 0.00847864)
_OTHER = (0.33405855, 0.306223, 0.12023676, 0.04488882, 0.17149256, 0.05384738)  # blush smile open_mouth hat ribbon glasses
_EYES = (0.28350664, 0.15760678, 0.17862742, 0.13412254, 0.14212126, 0.0543913, 0.01020637, 0.00617501,
         0.03167493, 0.00156775)
MGM_PRIORS: dict[str, float] = dict(zip(MGM_TAGS, (*_HAIR, *_STYLE, *_OTHER, *_EYES), strict=True))


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


@dataclass
class TagSummary:
    backend: str = ""
    reason: str = ""
    weights_sha256: str | None = None
    faces_in: int = 0
    tagged: int = 0
    seconds: float = 0.0  # wall time of this run: for the log and the run report, never the metric
    positive: Counter = field(default_factory=Counter)
    known: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, att: np.ndarray) -> None:
        self.tagged += len(att)
        for j, tag in enumerate(MGM_TAGS):
            self.positive[tag] += int((att[:, j] == 1).sum())
            self.known[tag] += int((att[:, j] != -1).sum())

    def frequency(self, tag: str) -> float | None:
        return self.positive[tag] / self.known[tag] if self.known[tag] else None

    def faces_per_second(self) -> float | None:
        return round(self.tagged / self.seconds, 2) if self.seconds else None

    def to_json(self) -> dict:
        """summary.json: what the tags are (same inputs, same bytes); no timings."""
        return {"backend": self.backend, "backend_reason": self.reason, "weights_sha256": self.weights_sha256,
                "faces_in": self.faces_in, "tagged": self.tagged,
                "frequency": {t: (round(f, 4) if (f := self.frequency(t)) is not None else None) for t in MGM_TAGS},
                "coverage": {t: round(self.known[t] / self.tagged, 4) if self.tagged else 0.0 for t in MGM_TAGS},
                "notes": self.notes}

    def metrics(self) -> dict:
        """The headline numbers (tag.out.metrics, the DVC metric): faces tagged and the mean share
        of faces whose tag is known, over the MGM tags; per tag: to_json()."""
        coverage = [self.known[t] / self.tagged for t in MGM_TAGS] if self.tagged else [0.0]
        return {"faces": self.tagged, "coverage": round(sum(coverage) / len(coverage), 4)}

    def lines(self) -> list[str]:
        fps = self.faces_per_second()
        out = [f"backend {self.backend} ({self.reason}); {self.tagged} of {self.faces_in} reviewed faces tagged"
               + (f" in {self.seconds:.1f} s ({fps} faces/s)" if fps else "")]
        out += self.notes
        out.append(f"{'tag':<14} {'here':>6}  MGM prior ({MGM_PRIOR_SOURCE})")
        for tag in MGM_TAGS:
            out.append(f"{tag:<14} {_f(self.frequency(tag)):>6}  {MGM_PRIORS[tag]:.4f}  known for {self.known[tag]}")
        return out

    def markdown(self) -> str:
        return card_section(self.to_json())


def card_section(summary: dict | None) -> str:
    """The tag section of the dataset card (and the stage's Prefect artifact) from summary.json."""
    if summary is None:
        return "_no tag summary yet_\n"
    freq, cov = summary.get("frequency", {}), summary.get("coverage", {})
    head = (f"**Backend: `{summary.get('backend')}`**, because: {summary.get('backend_reason') or 'not recorded'}. "
            f"{summary.get('tagged')} of {summary.get('faces_in')} reviewed faces tagged"
            + (f"; weights sha256 `{summary['weights_sha256']}`" if summary.get("weights_sha256") else "") + ".\n\n")
    notes = "".join(f"- {n}\n" for n in summary.get("notes", []))
    rows = ["| tag | frequency | share of faces known | MGM prior |", "|---|---:|---:|---:|"]
    for tag in MGM_TAGS:
        c = cov.get(tag)
        rows.append(f"| {tag} | {_f(freq.get(tag))} | {_f(c, 2)} | {MGM_PRIORS[tag]:.4f} |")
    source = f"\nMGM prior: {MGM_PRIOR_SOURCE}.\n"
    return head + notes + ("\n" if notes else "") + "\n".join(rows) + "\n" + source
