import dataclasses
import subprocess
import sys
import textwrap

import pytest

from tasks.config import build, load_params, to_dict
from tasks.errors import ConfigError
from tasks.params import Params
from tests.conftest import ROOT


def test_repo_params_load_and_round_trip():
    p = load_params(ROOT / "params.yaml")
    assert p.scrape.http.rate_limit > 0
    again = build(Params, to_dict(p))
    assert again == p


@pytest.mark.parametrize("data, message", [
    ({"scrape": {"sourc": "folder"}}, "unknown key scrape.sourc"),
    ({"scrape": {"http": {"rate_limit": "fast"}}}, "scrape.http.rate_limit: expected a number, got 'fast'"),
    ({"scrape": {"http": {"concurrency": 2.5}}}, "scrape.http.concurrency: expected an integer"),
    ({"scrape": {"http": {"concurrency": 0}}}, "scrape.http.concurrency: must be > 0"),
    ({"scrape": {"source": "pixiv"}}, "scrape.source: expected 'danbooru' | 'gelbooru' | 'getchu' | 'folder'"),
    ({"scrape": {"filters": {"ratings": ["general", "nsfw"]}}}, "scrape.filters.ratings: unknown rating 'nsfw'"),
    ({"scrape": {"filters": {"max_images": True}}}, "scrape.filters.max_images: expected an integer, got True"),
    ({"scrape": {"base_url": "ftp://x"}}, "scrape.base_url: expected an http(s) URL"),
    ({"scrape": {"min_sellday": "2005"}}, "scrape.min_sellday: expected YYYY-MM-DD"),
    ({"scrape": {"http": {"contact": "nobody"}}}, "scrape.http.contact: expected an e-mail address"),
    ({"scrape": "folder"}, "scrape: expected a mapping"),
    ({"scrapes": {}}, "unknown key scrapes"),
])
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ConfigError) as e:
        build(Params, data)
    assert message in str(e.value)


def test_config_is_frozen():
    p = build(Params, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.scrape.source = "danbooru"  # type: ignore[misc]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("scrape:\n  source: [folder\n")
    with pytest.raises(ConfigError, match=r"p.yaml: not valid YAML \(line \d+\)"):
        load_params(f)


def test_cli_bad_params_is_one_line_and_nonzero(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent("""\
        scrape:
          http:
            rate_limit: fast
        """))
    for module in ("tasks.scrape", "flows.scrape"):  # the stage command and its Prefect flow
        r = subprocess.run([sys.executable, "-m", module, "--params", str(f)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, module
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1] == f"error: {f}: scrape.http.rate_limit: expected a number, got 'fast'"


def test_cli_missing_params_file(tmp_path):
    for module in ("tasks.scrape", "flows.scrape"):
        r = subprocess.run([sys.executable, "-m", module, "--params", str(tmp_path / "nope.yaml")], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "params file not found" in r.stderr and "Traceback" not in r.stderr
