"""`python tests/support/regenerate_queue.py ROOT FACE_ID...`: a colleague records the given faces as
checked fine in ROOT's decisions CSV and reruns the review stage, so the queue the open contact sheet
came from is regenerated under it (the browser test runs this between two steps in the page)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.review.run import run_review  # noqa: E402
from tests.support.review import inputs, review_config  # noqa: E402

root, decided = Path(sys.argv[1]), sys.argv[2:]
cfg = review_config(root, page_size=4, columns=4, thumb_size=48)  # the browser test's LAYOUT
with open(cfg.decisions, "a", encoding="utf-8") as f:
    f.writelines(f"{fid},0,colleague,\n" for fid in decided)
run_review(cfg, inputs(root))
