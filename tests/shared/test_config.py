import dataclasses
import os
import subprocess
import sys

import pytest

from tasks.errors import ConfigError
from tasks.params.all import Params, load_params
from tasks.typed import build, to_dict
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
    ({"scrape": {"pack_images": 0}}, "scrape.pack_images: must be > 0"),
    ({"scrape": {"pack_images": "1k"}}, "scrape.pack_images: expected an integer, got '1k'"),
    ({"scrape": {"folder_import": "link"}}, "scrape.folder_import: expected 'copy' | 'reference', got 'link'"),
    ({"scrape": {"source": "pixiv"}}, "scrape.source: expected 'danbooru' | 'gelbooru' | 'getchu' | 'folder'"),
    ({"scrape": {"filters": {"ratings": ["general", "nsfw"]}}}, "scrape.filters.ratings: unknown rating 'nsfw'"),
    ({"scrape": {"filters": {"max_images": True}}}, "scrape.filters.max_images: expected an integer, got True"),
    ({"scrape": {"base_url": "ftp://x"}}, "scrape.base_url: expected an http(s) URL"),
    ({"scrape": {"min_sellday": "2005"}}, "scrape.min_sellday: expected YYYY-MM-DD"),
    ({"scrape": {"http": {"contact": "nobody"}}}, "scrape.http.contact: expected an e-mail address"),
    ({"review": {"pages_per_file": 0}}, "review.pages_per_file: expected 1..64 pages, got 0"),
    ({"review": {"page_size": 5000, "pages_per_file": 8}}, "review: page_size x pages_per_file = 40000 faces a part file"),
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
    """The shipped file with one bad value (the flow's up-front check reads every section)."""
    f = tmp_path / "p.yaml"
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert "    rate_limit: 1.0 " in text
    f.write_text(text.replace("    rate_limit: 1.0 ", "    rate_limit: fast", 1), encoding="utf-8")
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


def test_the_config_machinery_is_a_leaf():
    """tasks.typed (the builder) imports only tasks.errors; tasks.params (the loader) imports no section;
    the train section (models/ reads it: run.json) loads without torch or Prefect."""
    import ast

    def project_imports(path):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return {m for m in names if m and m.split(".")[0] in ("models", "tasks", "flows")}

    assert project_imports(ROOT / "tasks" / "typed.py") == {"tasks.errors"}
    assert project_imports(ROOT / "tasks" / "errors.py") == set()
    assert project_imports(ROOT / "tasks" / "params" / "__init__.py") == {"tasks.errors", "tasks.typed"}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tasks.params.train"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert r.returncode == 0 and "tasks" in imported, r.stderr[-2000:]
    assert not imported & {"torch", "prefect", "models", "flows"}, sorted(imported & {"torch", "prefect", "models", "flows"})


def test_models_configs_use_the_same_builder(tmp_path):
    """run.json (the standalone trainer) and params.yaml get the same strict, one-line messages."""
    from tasks.params.train import RunConfig
    from tasks.typed import build as typed_build

    run = typed_build(RunConfig, {"loop": {"steps": 5, "device": "cpu"}}, "run")
    assert run.loop.steps == 5 and typed_build(RunConfig, to_dict(run), "run") == run
    for data, message in [({"loop": {"step": 5}}, "unknown key run.loop.step (known: "),
                          ({"optim": {"batch": "64"}}, "run.optim.batch: expected an integer, got '64'"),
                          ({"model": {"image_size": 30}}, "run.model.image_size: expected a multiple of 8"),
                          ({"loop": {"device": "cuda:x"}}, "run.loop.device: expected auto | cpu | cuda | cuda:N")]:
        with pytest.raises(ConfigError) as e:
            typed_build(RunConfig, data, "run")
        assert message in str(e.value) and "\n" not in str(e.value)
    f = tmp_path / "run.json"
    f.write_text('{"loop": {"steps": "many"}}')
    r = subprocess.run([sys.executable, "-m", "models.training_loop", "--config", str(f)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(": run.loop.steps: expected an integer, got 'many'")


def test_a_models_validator_is_a_config_error_at_the_cli():
    """A check of the train section (ModelConfig.validate) reached through params.yaml is a ConfigError."""
    with pytest.raises(ConfigError, match=r"^train\.model\.z_dim: must be > 0$"):
        build(Params, {"train": {"model": {"z_dim": 0}}})


@pytest.mark.parametrize("verbose, level", [(False, 30), (True, 20)])
def test_stage_logging_keeps_dask_to_warnings_unless_verbose(verbose, level):
    env = {k: v for k, v in os.environ.items() if k != "DASK_LOGGING__DISTRIBUTED"}
    r = subprocess.run([sys.executable, str(ROOT / "tests/support/dask_log_level.py"), str(verbose).lower()], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == str(level), r.stderr
