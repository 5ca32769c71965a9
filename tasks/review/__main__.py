"""`python -m tasks.review --faces PATH --crops PATH --manifest PATH [--params FILE]`: the reviewed
faces and the manual-review queue (the DVC stage command; dvc.yaml hands it detect's and scrape's
outputs). `python -m tasks.review merge [--from FILE] [--reviewer NAME] [--keep-missing]`: the
reviewer's merge, and `python -m tasks.review edit`: queue.csv made writable where DVC linked it
into its cache (tasks.review.cli; neither imports Prefect or DVC)."""

import sys

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.review import ReviewConfig  # noqa: E402

INPUTS = (Input("faces", "the faces dataset (detect.out.faces)"),
          Input("crops", "its crop shards (detect.out.crops)"),
          Input("manifest", "the scrape manifest, for each face's source URL (scrape.out.manifest)"))


def run(cfg: ReviewConfig, faces: str, crops: str, manifest: str):
    from tasks.review.run import ReviewInputs, run_review

    return run_review(cfg, ReviewInputs(faces, crops, manifest))


if __name__ == "__main__":
    if sys.argv[1:2] in (["merge"], ["edit"]):
        from tasks.review.cli import main as reviewer_main

        sys.exit(reviewer_main(sys.argv[1:]))
    sys.exit(main("review", ReviewConfig, run, description=__doc__, inputs=INPUTS))
