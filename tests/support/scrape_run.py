"""`python tests/support/scrape_run.py ROOT URL [FOLDER]`: one scrape of a test source into ROOT (the fake
booru at URL, or the folder source on FOLDER), as a caller's plain script would run it: there is no
`if __name__ == "__main__":` guard on purpose (the decoders are plain subprocesses that never run their
caller's script again). Prints `kept N`. The SIGKILL test kills it mid-run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.scrape.run import scrape  # noqa: E402
from tests.support.scrape import scrape_cfg  # noqa: E402

root, url = Path(sys.argv[1]), sys.argv[2]
if len(sys.argv) > 3:
    cfg = scrape_cfg(root, url, source="folder", folder=sys.argv[3])
else:
    cfg = scrape_cfg(root, url, http={"rate_limit": 25.0, "concurrency": 3})
print("kept", scrape(cfg, progress=False).kept_new)
