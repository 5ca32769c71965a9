"""`python -m tasks.release --manifest PATH --rejected PATH --optout-log PATH --optout PATH --faces PATH
--tags PATH --detector PATH [--params FILE]`: write the release manifest, the dataset as URLs and
labels (data/release/; the DVC stage command: dvc.yaml hands it the earlier stages' outputs)."""

import sys

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.release import ReleaseConfig  # noqa: E402

INPUTS = (Input("manifest", "the scrape manifest (scrape.out.manifest)"),
          Input("rejected", "the posts scrape left out, by reason (scrape.out.rejected)"),
          Input("optout_log", "the takedown audit log (scrape.out.optout_log)"),
          Input("optout", "the takedown requests (scrape.optout): a manifest still holding one is refused"),
          Input("faces", "the reviewed faces (review.out.faces)"),
          Input("tags", "their tags (tag.out.tags)"),
          Input("detector", "the detector spec: the crop's padding (detect.out.detector)"))


def run(cfg: ReleaseConfig, **paths: str):
    from tasks.release.run import ReleaseInputs, release

    return release(cfg, ReleaseInputs(**paths))


if __name__ == "__main__":
    sys.exit(main("release", ReleaseConfig, run, description=__doc__, inputs=INPUTS))
