"""A params file that cannot be trusted is refused with one line, exit 2, before anything runs:
empty or cut short (a missing or empty section never falls back to the code's defaults), a key
given twice at any depth (YAML would keep the last), a float that is not finite, a file that is
not UTF-8, or a directory where the file should be (issue 21, items 7, 8 and 12)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tasks.errors import ConfigError
from tasks.params import load_section
from tasks.params.all import load_params
from tasks.params.render import RenderConfig
from tasks.params.tag import TagConfig
from tasks.params.train import RunConfig
from tasks.stage import main as stage_main
from tasks.typed import build
from tests.conftest import ROOT
from tests.support.logs import restore_logging  # noqa: F401 - autouse fixture


def shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def never_run(cfg, **paths):
    raise AssertionError(f"the stage ran with {cfg!r}")


def run_render_stage(params, cwd, monkeypatch, capsys) -> tuple[int, list[str]]:
    """tasks.stage.main as `python -m tasks.render --params FILE` runs it, in `cwd`; (exit code, stderr lines)."""
    monkeypatch.chdir(cwd)
    code = stage_main("render", RenderConfig, never_run, argv=["--params", str(params)])
    return code, capsys.readouterr().err.strip().splitlines()


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("text, message", [
    ("", "the params file is empty (expected the sections fetch, scrape"),
    ("# a comment, nothing else\n", "the params file is empty"),
    ("fetch: {}\n", "no `render` section (every stage's section must be there"),
    ("render:\n", "the `render` section is empty"),
], ids=["empty", "comments-only", "no-section", "empty-section"])
def test_a_params_file_cut_short_is_refused_and_nothing_runs(tmp_path, monkeypatch, capsys, text, message):
    f = tmp_path / "p.yaml"
    f.write_text(text, encoding="utf-8")
    last = tmp_path / "reports/runs/render.json"  # the last good run's report stays
    last.parent.mkdir(parents=True)
    last.write_text('{"wall_s": 1.0}')
    before = files_under(tmp_path)
    code, err = run_render_stage(f, tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {f}: {message}"), err
    assert files_under(tmp_path) == before and last.read_text() == '{"wall_s": 1.0}'


def test_the_whole_file_needs_every_section(tmp_path):
    """The tools and the Prefect flows' up-front check read the whole file: a section cut off is an error too."""
    data = shipped()
    del data["export"]
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.yaml: no `export` section"):
        load_params(f)
    assert load_params(ROOT / "params.yaml").export.opset > 0  # the shipped file has them all


@pytest.mark.parametrize("text, line, key, first", [
    ("render:\n  seed: 0\n  seed: 1\n", 3, "render.seed", 2),
    ("render:\n  out:\n    samples: a\n    samples: b\n", 4, "render.out.samples", 3),
    ("render:\n  grid: 8\nrender:\n  grid: 4\n", 3, "render", 1),
    ("render: {grid: 8, grid: 4}\n", 1, "render.grid", 1),
    ("render:\n  seed: 0\ntag:\n  thresholds: {glasses: 0.4, glasses: 0.5}\n", 4, "tag.thresholds.glasses", 4),
    ("tag:\n  color:\n    hair_palette:\n      x: [[1, 2, 3]]\n      y: [[1, 2, 3]]\n      x: [[3, 2, 1]]\n", 6,
     "tag.color.hair_palette.x", 4),
], ids=["section", "nested", "top-level", "flow-mapping", "other-section", "deep"])
def test_a_key_given_twice_is_refused_at_any_depth(tmp_path, monkeypatch, capsys, text, line, key, first):
    f = tmp_path / "p.yaml"
    f.write_text(text, encoding="utf-8")
    code, err = run_render_stage(f, tmp_path, monkeypatch, capsys)
    assert code == 2 and err == [f"error: {f}: line {line}: key {key} is given twice (first on line {first}); keep one"]


def test_a_merge_key_may_still_be_overridden(tmp_path):
    """`<<` merges a mapping in; overriding one of its keys is what merging is for, not a key given twice."""
    f = tmp_path / "p.yaml"
    f.write_text("render:\n  <<: {seed: 1, grid: 4}\n  grid: 6\n", encoding="utf-8")
    cfg = load_section("render", RenderConfig, f)
    assert (cfg.seed, cfg.grid) == (1, 6)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1.0e+999"])
def test_every_float_param_must_be_finite(tmp_path, value):
    f = tmp_path / "p.yaml"
    f.write_text(f"train:\n  optim:\n    lr: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_section("train", RunConfig, f)
    assert str(e.value).startswith(f"{f}: train.optim.lr: must be a finite number, got ")
    g = tmp_path / "q.yaml"  # a float inside a mapping of floats, in another section
    g.write_text(f"tag:\n  thresholds: {{glasses: {value}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tag\.thresholds\.glasses: must be a finite number"):
        load_section("tag", TagConfig, g)


def test_run_json_floats_must_be_finite_too(tmp_path):
    """run.json (the standalone trainer) is built by the same builder: JSON's NaN and Infinity are refused."""
    for text in ('{"optim": {"lr": NaN}}', '{"loss": {"lambda_gp": Infinity}}', '{"holdout": -Infinity}'):
        with pytest.raises(ConfigError, match=r"^run\.\w+(\.\w+)?: must be a finite number, got "):
            build(RunConfig, json.loads(text), "run")
    f = tmp_path / "run.json"
    f.write_text('{"optim": {"lr": Infinity}, "loop": {"device": "cpu"}}', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "models.training_loop", "--config", str(f)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: run.optim.lr: must be a finite number, got inf"]


def test_a_params_file_that_is_not_utf8_or_a_directory_is_one_line(tmp_path):
    latin1 = tmp_path / "latin1.yaml"  # the shipped file, one value saved in Latin-1 (a spreadsheet's export)
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    line = text[: text.index("1girl solo")].count("\n") + 1
    latin1.write_bytes(text.replace("1girl solo", "caf\u00e9").encode("utf-8").replace(b"caf\xc3\xa9", b"caf\xe9"))
    cases = [(latin1, f"error: {latin1}: line {line}: byte 0xe9 is not UTF-8 (save the file as UTF-8)"),
             (tmp_path, f"error: {tmp_path}: is a directory, not a params file")]
    for params, line in cases:
        r = subprocess.run([sys.executable, "-m", "tasks.render", "--params", str(params), "--data", "d",
                            "--tagger", "t", "--detector", "x"], cwd=tmp_path, env=env(), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [line], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.yaml"]  # nothing written


def test_a_control_character_in_the_params_file_is_one_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("render:\n  seed: 0\x00\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_section("render", RenderConfig, f)
    assert str(e.value) == f"{f}: not valid YAML (line 2): character U+0000: special characters are not allowed"


def env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}
