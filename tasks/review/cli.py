"""The reviewer's command line:
- `python -m tasks.review merge [--params FILE] [--from FILE] [--reviewer NAME] [--keep-missing] [--faces PATH]`:
  the verdicts into the decisions CSV; the faces dataset it checks face ids against is the one dvc.yaml
  hands the review stage;
- `python -m tasks.review edit [--params FILE]`: queue.csv made a writable file of its own where DVC
  linked it read-only into its cache (tasks.review.worksheet; `dvc unprotect`).
Neither imports Prefect or DVC (the import of Prefect alone takes seconds); each prints one line, or
`error: ...` (exit 1)."""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.errors import one_line_errors
from tasks.params import DEFAULT_PARAMS, load_section
from tasks.params.review import ReviewConfig
from tasks.review.merge import merge
from tasks.review.worksheet import make_editable

PROG = "python -m tasks.review"


@one_line_errors()
def merge_main(argv: list[str], prog: str = PROG) -> int:
    parser = argparse.ArgumentParser(prog=f"{prog} merge",
                                     description="Append the filled-in verdicts of the review queue to the decisions CSV.")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("--from", dest="source", default=None,
                        help="CSV with face_id,false_positive[,reviewer,note] (default: review.out.queue)")
    parser.add_argument("--reviewer", default="", help="name recorded for rows that leave reviewer blank")
    parser.add_argument("--keep-missing", action="store_true",
                        help="record verdicts on faces not in the faces dataset as orphans (they apply again if the "
                             "face returns) instead of refusing them")
    parser.add_argument("--drop-missing", dest="keep_missing", action="store_true",
                        help="the old name of --keep-missing: such verdicts are no longer dropped, they are kept as orphans")
    parser.add_argument("--faces", default=None, metavar="PATH",
                        help="the faces dataset to check face ids against (default: the one dvc.yaml hands the review stage)")
    args = parser.parse_args(argv)
    if "--drop-missing" in argv:
        print("note: --drop-missing keeps verdicts on missing faces as orphans now (the CSV's rule; --keep-missing)",
              file=sys.stderr)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = load_section("review", ReviewConfig, args.params)
    faces = args.faces or review_faces_path()
    result = merge(cfg, faces, args.source, args.reviewer, args.keep_missing)
    print(result.message())
    return 0


@one_line_errors()
def edit_main(argv: list[str], prog: str = PROG) -> int:
    parser = argparse.ArgumentParser(prog=f"{prog} edit",
                                     description="Make the review queue (review.out.queue) a writable file for a "
                                                 "spreadsheet, where DVC linked it read-only into its cache.")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    queue = load_section("review", ReviewConfig, args.params).out.queue
    state = ("a writable copy now, unlinked from DVC's cache" if make_editable(queue)
             else "already a file of its own, not linked into DVC's cache")
    print(f"{queue}: {state}: edit it, then `{prog} merge`")
    return 0


def review_faces_path() -> str:
    """The faces dataset dvc.yaml hands the review stage (`--faces`)."""
    from tasks.dag import stage_inputs
    from tasks.errors import ConfigError

    faces = stage_inputs("review").get("faces")
    if not faces:
        raise ConfigError("dvc.yaml: the review stage's cmd hands it no --faces: pass merge --faces PATH")
    return faces


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"merge": merge_main, "edit": edit_main}
    if argv[:1] not in ([c] for c in commands):
        print(f"usage: {prog} merge [--params FILE] [--from FILE] [--reviewer NAME] [--keep-missing]\n"
              f"       {prog} edit [--params FILE]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:], prog)
