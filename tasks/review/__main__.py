"""`python -m tasks.review [--params FILE]`: export the manual-review queue (the DVC stage command).
`python -m tasks.review merge [--from FILE] [--reviewer NAME] [--keep-missing]`: the reviewer's
merge (tasks.review.cli), which needs neither Prefect nor DVC."""

import sys

from tasks.stage import main


def run(params):
    from tasks.review.run import inputs_from, run_review

    return run_review(params.review, inputs_from(params))


if __name__ == "__main__":
    if sys.argv[1:2] == ["merge"]:
        from tasks.review.cli import merge_main

        sys.exit(merge_main(sys.argv[2:]))
    sys.exit(main("review", run, description=__doc__))
