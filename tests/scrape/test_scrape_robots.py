"""robots.txt as RFC 9309 defines it: the RFC's own examples, then the stage against a real
server whose robots.txt needs wildcards and the longest match."""

import pytest

from tasks.http import Robots
from tasks.scrape.run import scrape
from tests.support.fakebooru import REAL, FakeBooru
from tests.support.scrape import manifest, rejected, scrape_cfg, sha_of

# RFC 9309, 5.1 "Simple Example"
RFC_SIMPLE = """\
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""

# RFC 9309, 5.2 "Longest Match"
RFC_LONGEST = """\
User-Agent: foobot
Allow: /example/page/
Disallow: /example/page/disallowed.gif
"""


@pytest.mark.parametrize("agent, path, allowed", [
    ("foobot", "/example/page.html", True),  # Allow is longer than Disallow: /
    ("foobot", "/example/allowed.gif", True),
    ("foobot", "/example/disallowed.gif", False),
    ("foobot", "/publications/", False),  # foobot has a group of its own: the * group does not apply
    ("FooBot", "/example/page.html", True),  # product tokens match case-insensitively
    ("barbot", "/example/page.html", False),  # one group, two user-agent lines
    ("bazbot", "/example/page.html", False),
    ("barbot", "/example/other.gif", True),
    ("quxbot", "/example/page.html", True),  # an empty group allows everything
    ("quxbot", "/picture.gif", True),
    ("moeflow", "/picture.gif", False),  # no group of its own: the * group; `$` anchors the end
    ("moeflow", "/picture.gif?size=big", True),  # ... of the path and query
    ("moeflow", "/pictures/animated.gif", False),  # `*` matches any run of characters
    ("moeflow", "/example/index.html", False),
    ("moeflow", "/publications/report.html", True),
    ("moeflow", "/publications/cover.gif", True),  # the longer Allow: /publications/ wins over *.gif$
])
def test_rfc9309_simple_example(agent, path, allowed):
    assert Robots.parse(RFC_SIMPLE).allows(f"https://www.example.com{path}", agent) is allowed


@pytest.mark.parametrize("path, allowed", [
    ("/example/page/", True), ("/example/page/index.html", True), ("/example/page/disallowed.gif", False),
    ("/example/page/disallowed.gif.html", False),  # a prefix match: the rest of the path does not matter
])
def test_rfc9309_longest_match(path, allowed):
    assert Robots.parse(RFC_LONGEST).allows(f"https://www.example.com{path}", "foobot") is allowed


@pytest.mark.parametrize("rules, path, allowed", [
    ("Allow: /folder\nDisallow: /folder\n", "/folder/page", True),  # equivalent rules: Allow wins (2.2.2)
    ("Disallow: /fish*.php\n", "/fishheads/catfish.php?parameters", False),
    ("Disallow: /fish*.php\n", "/Fish.PHP", True),  # paths are case-sensitive
    ("Disallow: /foo/bar/ツ\n", "/foo/bar/%E3%83%84", False),  # compared percent-encoded (2.2.2)
    ("Disallow: /foo/bar/%E3%83%84\n", "/foo/bar/ツ", False),
    ("Disallow: /foo/bar/%62%61%7A\n", "/foo/bar/baz", False),  # unreserved characters decode
    ("Disallow: /\nAllow: /$\n", "/", True), ("Disallow: /\nAllow: /$\n", "/page", False),
    ("Disallow:\n", "/anything", True),  # an empty Disallow disallows nothing
])
def test_rfc9309_matching_rules(rules, path, allowed):
    assert Robots.parse("User-agent: *\n" + rules).allows(f"https://h.example{path}", "moeflow") is allowed


def test_groups_for_the_same_agent_are_merged():
    text = "User-agent: moeflow\nDisallow: /a\n\nUser-agent: other\nDisallow: /b\n\nUser-agent: moeflow\nDisallow: /c\n"
    robots = Robots.parse(text)
    assert [robots.allows(f"https://h.example/{p}", "moeflow") for p in "abc"] == [False, True, False]


def test_the_stage_follows_wildcards_and_the_longest_match(tmp_path):
    pngs = [n for n in sorted(p.name for p in REAL.iterdir()) if n.endswith(".png")][:3]
    jpgs = [n for n in sorted(p.name for p in REAL.iterdir()) if n.endswith(".jpg")][:2]
    robots = "User-agent: *\nDisallow: /data/*.png$\nAllow: /data/keep_*.png$\n"
    with FakeBooru(robots=robots) as srv:
        srv.alias(f"keep_{pngs[0]}", pngs[0])
        srv.add_real_posts([f"keep_{pngs[0]}", *pngs[1:], *jpgs])
        cfg = scrape_cfg(tmp_path, srv.url)
        scrape(cfg, progress=False)
    assert {r["image_id"] for r in manifest(cfg)} == sha_of(REAL / n for n in [pngs[0], *jpgs])
    assert sorted(rejected(cfg).values()) == ["robots_disallowed"] * 2
    assert not any(srv.requests_for(f"/data/{n}") for n in pngs[1:])  # disallowed: never asked for
