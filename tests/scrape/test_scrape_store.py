"""What the scrape stage leaves on disk: the dataset card's opt-out count over all runs, and
file modes a plain write would give."""

import dataclasses
import json
import os
import stat

import pytest
import yaml

from tasks.fileio import atomic_write_text
from tasks.params.all import load_params
from tasks.scrape.run import scrape
from tasks.tools.card import build_card
from tests.conftest import ROOT
from tests.support.fakebooru import REAL, FakeBooru
from tests.support.scrape import scrape_cfg

NAMES = sorted(p.name for p in REAL.iterdir())


def _card_row(card: str, key: str) -> str:
    section = card.split("## Opt-outs honoured", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith(f"| {key} |")]
    return row


def test_the_card_counts_opt_outs_over_all_runs_not_the_last_one(tmp_path):
    with FakeBooru() as srv:  # its robots.txt disallows /private/
        srv.add_real_posts(NAMES[:2], start_id=100)
        srv.add_real_posts([NAMES[2]], start_id=90)
        srv.fault(f"/data/{NAMES[2]}", "noai")
        srv.alias("private.png", NAMES[3])
        srv.posts.append({"id": 80, "file": "private/private.png", "rating": "g", "tag_string": ""})
        srv.add_real_posts([NAMES[4]], start_id=70, tag_string_artist="opted_out_artist")
        srv.add_real_posts([NAMES[5]], start_id=60, tag_string="1girl do_not_train")
        cfg = scrape_cfg(tmp_path, srv.url, filters={"blocklist_artists": ["opted_out_artist"],
                                                     "blocklist_tags": ["do_not_train"]})
        first = scrape(cfg, progress=False)
        srv.add_real_posts([NAMES[6]], start_id=50)  # something new for the second run
        second = scrape(cfg, progress=False)  # resumed: the opt-outs of run 1 are "already done"
    assert first.rejected["noai"] == 1 and second.rejected == {} and second.kept_new == 1
    params = tmp_path / "params.yaml"
    whole = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))  # the card reads every section
    whole["scrape"] = json.loads(json.dumps(dataclasses.asdict(cfg)))
    params.write_text(yaml.safe_dump(whole))
    card = build_card(load_params(params), root=tmp_path)
    for key in ("noai_header", "robots_disallowed", "blocklist_artist", "blocklist_tag"):
        assert _card_row(card, key) == f"| {key} | 1 |", card


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=["022", "027", "002"])
def test_artifacts_get_the_mode_a_plain_write_would_have(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with FakeBooru() as srv:
            srv.add_real_posts(NAMES[:2])
            cfg = scrape_cfg(tmp_path, srv.url)
            scrape(cfg, progress=False)
        out = [cfg.out.manifest, cfg.out.rejected, cfg.out.summary, tmp_path / "images" / "journal.jsonl",
               *(tmp_path / "images").glob("*/*.*")]
        assert len(out) == 5  # the two images: one pack
        assert {str(p): oct(stat.S_IMODE(os.stat(p).st_mode)) for p in out} == {str(p): oct(mode) for p in out}
        new = tmp_path / "review" / "false_positives.csv"
        atomic_write_text(new, "image_id,face\n")
        assert stat.S_IMODE(os.stat(new).st_mode) == mode
        os.chmod(new, 0o600)  # a mode the owner chose: an overwrite keeps it, as open(..., "w") would
        atomic_write_text(new, "image_id,face\nab,1\n")
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o600 and new.read_text().endswith("ab,1\n")
    finally:
        os.umask(old)
