"""`python -m tasks.detect [--params FILE]`: detect and crop anime faces (the DVC stage command)."""

import sys
from pathlib import Path

from tasks.detect.run import detect
from tasks.stage import main


class DetectReport:
    """The stage's summary, with the contact sheet in its Markdown."""

    def __init__(self, summary, sheet: str):
        self.summary, self.sheet = summary, sheet

    def lines(self) -> list[str]:
        return self.summary.lines()

    def markdown(self) -> str:
        return self.summary.markdown(Path(self.sheet).read_bytes())


def run(params) -> DetectReport:
    return DetectReport(detect(params.detect, params.scrape.out.manifest, params.scrape.out.images,
                               boxes=params.scrape.out.boxes),
                        params.detect.out.contact_sheet)


if __name__ == "__main__":
    sys.exit(main("detect", run, description=__doc__))
