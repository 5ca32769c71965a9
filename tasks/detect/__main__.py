"""`python -m tasks.detect --manifest PATH --images PATH --boxes PATH [--params FILE]`: detect and crop
anime faces (the DVC stage command; dvc.yaml hands it the scrape stage's outputs)."""

import sys
from pathlib import Path

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.detect import DetectConfig  # noqa: E402

INPUTS = (Input("manifest", "the scrape manifest (scrape.out.manifest)"),
          Input("images", "the image store the manifest's packs are relative to (scrape.out.images)"),
          Input("boxes", "the faces a release recorded, cropped as recorded (scrape.out.boxes)"))


class DetectReport:
    """The stage's summary, with the contact sheet in its Markdown."""

    def __init__(self, summary, sheet: str):
        self.summary, self.sheet = summary, sheet

    def lines(self) -> list[str]:
        return self.summary.lines()

    def markdown(self) -> str:
        return self.summary.markdown(Path(self.sheet).read_bytes())


def run(cfg: DetectConfig, manifest: str, images: str, boxes: str) -> DetectReport:
    from tasks.detect.run import detect

    return DetectReport(detect(cfg, manifest, images, boxes=boxes), cfg.out.contact_sheet)


if __name__ == "__main__":
    sys.exit(main("detect", DetectConfig, run, description=__doc__, inputs=INPUTS))
