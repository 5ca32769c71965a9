"""Each source against the local fake server (or a folder): paging, parsing, filters."""

import json
from urllib.parse import parse_qs

import pyarrow.parquet as pq
import pytest

from tasks.artifacts.images import MANIFEST_SCHEMA, read_image
from tasks.fileio import sha256_bytes
from tasks.errors import ConfigError, Rejected, SourceError
from tasks.scrape.run import scrape
from tasks.scrape.sources import Extractor, parse_getchu_page, read_game_list
from tests.support.fakebooru import DEEP_REFUSALS, REAL, FakeBooru, getchu_page
from tests.support.scrape import manifest, scrape_cfg, sha_of, stored

ALL = sorted(p for p in REAL.iterdir())


def test_danbooru_pages_to_the_end_and_keeps_every_image(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts()
        cfg = scrape_cfg(tmp_path, srv.url)
        s = scrape(cfg, progress=False)
    rows = manifest(cfg)
    assert {r["image_id"] for r in rows} == sha_of(ALL)
    assert s.kept_new == len(ALL) == s.kept_total
    pages = [parse_qs(q)["page"][0] for _, p, q in srv.requests_for("/posts.json")]
    assert pages == ["1", "2", "3", "4", "5"]  # 46 posts, 10 per page; a short page ends it
    r0 = rows[0]
    assert r0["source"] == "danbooru" and r0["tags"] == ["1girl", "solo"] and r0["artist"] == "artist_a"
    assert r0["rating"] == "general" and r0["page_url"].startswith(srv.url + "/posts/")
    for r in rows:  # content addressed, in packs of scrape.pack_images
        assert r["pack"] == "packs/000001.tar" and r["length"] == r["bytes"]
        assert sha256_bytes(read_image(tmp_path / "images", r)) == r["image_id"]
    table = pq.read_table(cfg.out.manifest)
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"moeflow.schema_version"] == b"3"


def test_danbooru_switches_to_cursor_paging_past_the_page_limit(tmp_path):
    with FakeBooru(max_page=2) as srv:
        srv.add_real_posts()
        cfg = scrape_cfg(tmp_path, srv.url, page_limit=2)
        scrape(cfg, progress=False)
    pages = [parse_qs(q)["page"][0] for _, p, q in srv.requests_for("/posts.json")]
    assert pages[:2] == ["1", "2"] and all(p.startswith("b") for p in pages[2:])
    ids = sorted((p["id"] for p in srv.posts), reverse=True)
    assert pages[2] == f"b{ids[19]}"  # the lowest id seen so far
    assert {r["image_id"] for r in manifest(cfg)} == sha_of(ALL)


def test_danbooru_error_object_and_no_matches_are_clear(tmp_path):
    with FakeBooru(max_page=1) as srv:
        srv.add_real_posts()
        with pytest.raises(SourceError, match="You cannot go beyond page 1"):
            scrape(scrape_cfg(tmp_path, srv.url, page_limit=5), progress=False)
        with pytest.raises(SourceError, match="no posts found for tags 'nothing_matches'"):
            scrape(scrape_cfg(tmp_path / "b", srv.url, tags="nothing_matches"), progress=False)


def test_gelbooru_dapi_pid_paging_then_id_cursor(tmp_path):
    with FakeBooru() as srv:
        srv.add_real_posts(ALL_NAMES := [p.name for p in ALL][:25])
        cfg = scrape_cfg(tmp_path, srv.url, source="gelbooru", page_limit=2)
        scrape(cfg, progress=False)
    qs = [parse_qs(q) for _, p, q in srv.requests_for("/index.php")]
    assert all(q["json"] == ["1"] and q["s"] == ["post"] and q["q"] == ["index"] for q in qs)
    assert [q["pid"][0] for q in qs[:2]] == ["0", "1"]
    assert "id:<" in qs[2]["tags"][0] and qs[2]["pid"] == ["0"]
    assert {r["image_id"] for r in manifest(cfg)} == sha_of(REAL / n for n in ALL_NAMES)
    assert all(r["source"] == "gelbooru" and r["rating"] == "general" for r in manifest(cfg))


def test_getchu_parses_euc_jp_pages_and_filters_by_sellday(tmp_path):
    games = tmp_path / "games.csv"
    games.write_text("id,gamename,sellday,links\n"
                     "1,新しいゲーム,2010-05-28,http://www.getchu.com/soft.phtml?id=700001\n"
                     "2,古いゲーム,1999-01-01,http://www.getchu.com/soft.phtml?id=700002\n", encoding="utf-8")
    with FakeBooru() as srv:
        srv.alias("c700001chara1.png", "s2p_1.png")
        srv.alias("c700001chara2.png", "s2p_10.png")
        srv.alias("c700002chara1.png", "s2p_11.png")
        srv.games["700001"] = getchu_page("700001", "新しいゲーム 通常版", [("c700001chara1.png", "春野 さくら"),
                                                                       ("c700001chara2.png", "月城 かえで")])
        srv.games["700002"] = getchu_page("700002", "古いゲーム", [("c700002chara1.png", "古い")])
        cfg = scrape_cfg(tmp_path, srv.url, source="getchu", getchu_games=str(games), min_sellday="2003-01-01")
        scrape(cfg, progress=False)
    rows = sorted(manifest(cfg), key=lambda r: r["post_id"])
    assert [(r["post_id"], r["character"], r["title"]) for r in rows] == [
        ("700001/1", "春野 さくら", "新しいゲーム"), ("700001/2", "月城 かえで", "新しいゲーム")]
    assert {r["image_id"] for r in rows} == sha_of([REAL / "s2p_1.png", REAL / "s2p_10.png"])
    soft = [q for _, p, q in srv.requests_for("/soft.phtml")]
    assert soft == ["id=700001&gc=gc"]  # the age gate is passed; the old game is never fetched
    assert not srv.requests_for("/brandnew/700001/thumb")  # thumbnails are not standing pictures


def test_getchu_page_parser_decodes_euc_jp():
    html = getchu_page("9", "タイトル", [("c9chara1.jpg", "名前 一")]).encode("euc_jp")
    title, charas = parse_getchu_page(html, "http://h/soft.phtml?id=9&gc=gc")
    assert title == "タイトル" and charas == [("http://h/brandnew/9/c9chara1.jpg", "名前 一")]


def test_getchu_game_list_errors_name_the_problem(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text("id,title,sellday\n1,x,2010-01-01\n")
    with pytest.raises(SourceError, match="no url column"):
        read_game_list(str(f))
    f.write_text("id,title,sellday,url\n1,x,2010-01-01,http://example/nothing\n")
    with pytest.raises(SourceError, match="line 2: cannot find a Getchu id"):
        read_game_list(str(f))
    with pytest.raises(SourceError, match="not found"):
        read_game_list(str(tmp_path / "missing.csv"))


def test_folder_source_with_sidecars(tmp_path):
    src = tmp_path / "dump"
    (src / "sub").mkdir(parents=True)
    names = ["s2p_1.png", "s2p_10.png", "dbr_emilia.jpg"]
    for n in names[:2]:
        (src / n).symlink_to(REAL / n)
    (src / "sub" / names[2]).symlink_to(REAL / names[2])
    (src / "s2p_1.png.json").write_text(json.dumps({"id": 42, "tags": ["blue_hair", "smile"], "rating": "g",
                                                    "artist": "someone"}))
    (src / "metadata.jsonl").write_text(json.dumps({"file_name": "sub/dbr_emilia.jpg", "tag_string": "silver_hair",
                                                    "rating": "explicit"}) + "\n")
    (src / "notes.txt").write_text("not an image")
    cfg = scrape_cfg(tmp_path, "http://unused.invalid", source="folder", folder=str(src))
    s = scrape(cfg, progress=False)
    rows = {r["post_id"]: r for r in manifest(cfg)}
    assert set(rows) == {"42", "s2p_10.png"}
    assert rows["42"]["tags"] == ["blue_hair", "smile"] and rows["42"]["artist"] == "someone"
    assert s.skipped["rating"] == 1  # the explicit one from metadata.jsonl


def test_filters_skip_before_download(tmp_path):
    with FakeBooru() as srv:
        names = [p.name for p in ALL][:6]
        srv.add_real_posts(names[:2])
        srv.add_real_posts(names[2:3], rating="e", start_id=4000)
        srv.add_real_posts(names[3:4], start_id=3000, tag_string_artist="banned_artist")
        srv.add_real_posts(names[4:5], start_id=2000, tag_string="1girl banned_tag")
        srv.posts.append({"id": 10, "file": None, "rating": "g", "tag_string": "deleted"})
        srv.posts.append({"id": 9, "file": "data/x.mp4", "rating": "g", "file_ext": "mp4"})
        srv.add_real_posts(names[5:6], start_id=8, image_width=100, image_height=100)
        cfg = scrape_cfg(tmp_path, srv.url, filters={"blocklist_artists": ["banned_artist"],
                                                     "blocklist_tags": ["banned_tag"], "min_width": 200})
        s = scrape(cfg, progress=False)
    assert s.kept_new == 2
    assert dict(s.skipped) == {"rating": 1, "blocklist_artist": 1, "blocklist_tag": 1, "no_file_url": 1,
                               "format": 1, "too_small": 1}
    downloaded = {p for _, p, _ in srv.requests_for("/data/")}
    assert downloaded == {f"/data/{n}" for n in names[:2]}


def test_max_images_and_duplicate_bytes_stored_once(tmp_path):
    with FakeBooru() as srv:
        names = [p.name for p in ALL]
        srv.add_real_posts(names[:3])
        srv.add_real_posts(names[:1], start_id=10)  # the same bytes again under another post
        cfg = scrape_cfg(tmp_path, srv.url)
        s = scrape(cfg, progress=False)
        assert (s.kept_new, s.duplicate) == (3, 1)
        assert len(stored(tmp_path / "images")) == 3
        cfg2 = scrape_cfg(tmp_path / "m", srv.url, filters={"max_images": 2}, http={"concurrency": 1})
        s2 = scrape(cfg2, progress=False)
        assert s2.kept_total == 2 and len(manifest(cfg2)) == 2


@pytest.mark.parametrize("refusal", DEEP_REFUSALS)
def test_gelbooru_takes_the_id_cursor_when_the_site_refuses_a_deep_pid(tmp_path, refusal):
    names = [p.name for p in ALL]
    with FakeBooru(dapi_max_offset=20, deep_refusal=refusal) as srv:  # pid 3 x 10 posts is too deep
        srv.add_real_posts(names)
        cfg = scrape_cfg(tmp_path, srv.url, source="gelbooru")  # page_limit left to the site: offset 20000
        s = scrape(cfg, progress=False)
    qs = [parse_qs(q) for _, p, q in srv.requests_for("/index.php")]
    assert [q["pid"][0] for q in qs[:4]] == ["0", "1", "2", "3"]
    ids = sorted((p["id"] for p in srv.posts), reverse=True)
    assert qs[4]["tags"][0] == f"1girl id:<{ids[29]}" and qs[4]["pid"] == ["0"]  # below the lowest id seen
    assert all("id:<" in q["tags"][0] for q in qs[4:])
    assert {r["image_id"] for r in manifest(cfg)} == sha_of(ALL) and s.kept_new == len(ALL)


def test_danbooru_user_agent_names_the_login(tmp_path, monkeypatch):
    monkeypatch.setenv("MOEFLOW_TEST_LOGIN", "alice_b")
    monkeypatch.setenv("MOEFLOW_TEST_KEY", "secret-key")
    with FakeBooru() as srv:
        srv.add_real_posts([ALL[0].name])
        cfg = scrape_cfg(tmp_path, srv.url, login_env="MOEFLOW_TEST_LOGIN", api_key_env="MOEFLOW_TEST_KEY")
        scrape(cfg, progress=False)
        monkeypatch.delenv("MOEFLOW_TEST_LOGIN")
        n = len(srv.user_agents)
        scrape(scrape_cfg(tmp_path / "anon", srv.url, login_env="MOEFLOW_TEST_LOGIN"), progress=False)
    assert n >= 3 and all("alice_b" in ua and "tests@moeflow.local" in ua for ua in srv.user_agents[:n])
    assert not any("alice_b" in ua or "secret" in ua for ua in srv.user_agents[n:])
    assert not any("secret" in ua for ua in srv.user_agents)


@pytest.mark.parametrize("source, base, per_page, page_limit, interval, cdn", [
    ("danbooru", "https://danbooru.donmai.us", 200, 1000, 0.1, "https://cdn.donmai.us/original/ab/cd/x.jpg"),
    ("gelbooru", "https://gelbooru.com", 100, 200, 0.5, "https://img3.gelbooru.com/images/ab/cd/x.jpg"),
    ("getchu", "https://www.getchu.com", None, None, 1.0, "https://img.getchu.com/brandnew/1/c1chara1.jpg"),
])
def test_each_site_declares_its_own_defaults(tmp_path, source, base, per_page, page_limit, interval, cdn):
    cfg = scrape_cfg(tmp_path, base, source=source, posts_per_page=None, http={"rate_limit": 0})
    ex = Extractor.registry[source](cfg)
    try:
        if per_page is not None:
            assert (ex.per_page, ex.page_limit) == (per_page, page_limit)
        assert ex.http.s.interval == interval  # rate_limit 0 lifts our limit, not the site's
        ex.http.check_url(cdn)  # the site's own file hosts are allowed without scrape.file_hosts
        with pytest.raises(Rejected, match="foreign_host"):
            ex.http.check_url("https://elsewhere.example/x.jpg")
    finally:
        ex.http.close()
    # the same API on another host: none of the site's hosts or limits apply
    other = Extractor.registry[source](scrape_cfg(tmp_path, "http://127.0.0.1:9", source=source, http={"rate_limit": 0}))
    assert other.http.s.interval == 0
    with pytest.raises(Rejected, match="foreign_host"):
        other.http.check_url(cdn)
    other.http.close()


def test_a_page_size_the_site_does_not_serve_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^scrape.posts_per_page: danbooru serves at most 200 posts per page, got 500$"):
        Extractor.registry["danbooru"](scrape_cfg(tmp_path, "https://danbooru.donmai.us", posts_per_page=500))


def test_one_rejected_for_urls_downloads_and_images():
    """tasks.errors.Rejected is what the HTTP layer, the scrape decoder and detect's image loader
    raise; it keeps reason and detail across a process boundary."""
    import pickle

    from tasks import http
    from tasks.detect import work
    from tasks.scrape import validate

    assert http.Rejected is validate.Rejected is work.Rejected is Rejected
    e = pickle.loads(pickle.dumps(Rejected("too_large", "9000x9000")))
    assert (e.reason, e.detail, str(e)) == ("too_large", "9000x9000", "too_large: 9000x9000")
    assert str(Rejected("noai")) == "noai"
