"""dvc.yaml is complete, and the floor plan holds.

- Every stage lists as deps the project modules it really imports (its entry point and everything
  that imports, at module level or inside a function), its own params section and the files its
  params name, and the paths its cmd hands it: a stage that reads something DVC does not know about
  would not rerun when it changes.
- No stage imports another stage (only the shared layers: tasks/artifacts, tasks/params, the
  infrastructure modules, tasks/detectors.py, tasks/taggers, and the torch package models/); a stage
  loads only its own params section; so a stage's deps hold no other stage's code, and a change to one
  stage's code or params reruns that stage and what follows it, never what comes before."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tasks.dag import load_dag, stage_inputs, topological_order
from tests.conftest import ROOT

PACKAGES = ("flows", "tasks", "models")
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DAG = load_dag(ROOT)
STAGES = tuple(DAG)  # each stage's package is tasks/<stage>
PATHLIKE = re.compile(r"^[\w.~-]*[/\\].*|.*\.(?:csv|xml|json|parquet|onnx|safetensors|gz|txt)$")


def module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def project_imports(path: Path, package: str) -> set[str]:
    """Project modules imported anywhere in `path` (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] in PACKAGES:
                out.add(n)
    return out


def closure(module: str) -> set[Path]:
    """Files of `module` and of every project module it imports, transitively (packages' __init__ too)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            f = module_file(".".join(parts[:i]))
            if f is None or f in seen:
                continue
            seen.add(f)
            pkg = ".".join(parts[:i]) if f.name == "__init__.py" else ".".join(parts[:i - 1])
            todo += sorted(project_imports(f, pkg))
    return seen


def entry_module(stage) -> str:
    m = re.search(r"python -m ([\w.]+)", stage.cmd)
    assert m, f"stage {stage.name}: cmd {stage.cmd!r} is not `python -m <module>`"
    return m.group(1) + ".__main__" if module_file(m.group(1) + ".__main__") else m.group(1)


def covered(path: str, deps) -> bool:
    p = Path(path)
    return any(p == Path(d) or Path(d) in p.parents for d in deps)


def stage_of(path: Path) -> str | None:
    """The stage whose package holds `path`, or None (a shared module)."""
    rel = path.relative_to(ROOT).parts
    return rel[1] if len(rel) > 2 and rel[0] == "tasks" and rel[1] in STAGES else None


def leaves(node, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{key}.{k}")
    else:
        yield key, node


@pytest.mark.parametrize("name", STAGES)
def test_stage_depends_on_every_module_it_imports(name):
    stage = DAG[name]
    missing = sorted(str(f.relative_to(ROOT)) for f in closure(entry_module(stage))
                     if not covered(str(f.relative_to(ROOT)), stage.deps))
    assert not missing, f"stage {name} imports modules dvc.yaml does not list as deps: {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_no_stage_imports_another_stage(name):
    """Modules, and every function inside them: what two stages share lives in a shared layer."""
    crossing = sorted(f"{f.relative_to(ROOT)} -> {imported}"
                      for f in (ROOT / "tasks" / name).rglob("*.py")
                      for imported in project_imports(f, ".".join(f.relative_to(ROOT).with_suffix("").parts[:-1]))
                      if imported.split(".")[0] == "tasks" and len(imported.split(".")) > 1
                      and imported.split(".")[1] in STAGES and imported.split(".")[1] != name)
    assert not crossing, f"stage {name} imports other stages: {crossing}"


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_depends_on_no_other_stage_code(name):
    stage = DAG[name]
    own = ROOT / "tasks" / name
    others = sorted(str(f.relative_to(ROOT)) for f in closure(entry_module(stage))
                    if stage_of(f) not in (None, name))
    assert not others, f"stage {name} runs other stages' code: {others}"
    listed = sorted(d for d in stage.deps if (ROOT / d).exists() and (ROOT / d) != own and stage_of(ROOT / d) is not None)
    assert not listed, f"stage {name} lists other stages' code as deps: {listed}"


def test_the_shared_layers_import_no_stage_and_models_no_stage_or_prefect():
    shared = [f for f in (ROOT / "tasks").rglob("*.py") if stage_of(f) is None and f.parent.name != "tools"]
    shared += list((ROOT / "models").rglob("*.py"))
    bad = sorted(f"{f.relative_to(ROOT)} -> {m}" for f in shared
                 for m in project_imports(f, ".".join(f.relative_to(ROOT).with_suffix("").parts[:-1]))
                 if m.split(".")[0] == "flows" or (m.split(".")[0] == "tasks" and len(m.split(".")) > 1
                                                   and m.split(".")[1] in (*STAGES, "tools")))
    assert not bad, bad
    for f in (ROOT / "models").rglob("*.py"):
        assert "prefect" not in f.read_text(encoding="utf-8"), f"{f}: torch code imports no Prefect"
    for init in ("tasks/__init__.py", "tasks/artifacts/__init__.py", "tasks/params/__init__.py"):
        names = project_imports(ROOT / init, init.rsplit("/", 1)[0].replace("/", "."))
        assert all(n.startswith(("tasks.errors", "tasks.typed")) for n in names), (init, names)  # loads no section


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_loads_only_its_own_section(name):
    """dvc.yaml lists exactly its section; its entry point hands that section's class to the runner;
    no module of the stage reads params.yaml itself."""
    stage = DAG[name]
    assert stage.params == (name,), f"stage {name}: params {stage.params}"
    main = (ROOT / "tasks" / name / "__main__.py").read_text(encoding="utf-8")
    assert f'main("{name}", ' in main and f"from tasks.params.{name} import " in main
    for f in (ROOT / "tasks" / name).rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        for reader in ("load_params(", "read_params(", "read_yaml(", "tasks.params.all"):
            assert reader not in text, f"{f.relative_to(ROOT)} reads params.yaml itself ({reader})"
        sections = re.findall(r"load_section\(\s*\"(\w+)\"", text)  # the reviewer's merge loads `review`
        assert set(sections) <= {name} and text.count("load_section(") == len(sections), f.relative_to(ROOT)


@pytest.mark.parametrize("name", STAGES)
def test_the_paths_a_stage_is_handed_are_its_deps(name):
    stage = DAG[name]
    inputs = stage_inputs(name, ROOT)
    missing = sorted(f"--{k} {v}" for k, v in inputs.items() if not covered(v, stage.deps))
    assert not missing, f"stage {name}: cmd hands it paths dvc.yaml does not list as deps: {missing}"
    words = shlex.split(stage.cmd)
    assert all(w.replace("-", "_")[2:] in inputs for w in words if w.startswith("--")), stage.cmd


@pytest.mark.parametrize("name", STAGES)
def test_stage_depends_on_every_file_its_params_name(name):
    stage = DAG[name]
    outs = (*stage.outs, *stage.metrics, *stage.plots)
    missing = []
    for leaf, value in leaves(PARAMS[name], name):
        if not isinstance(value, str) or "://" in value or not PATHLIKE.match(value):
            continue
        if covered(value, outs) or any(Path(value) in Path(o).parents for o in outs):
            continue  # something this stage writes
        if not covered(value, stage.deps):
            missing.append(f"{leaf} = {value}")
    assert not missing, f"stage {name} reads files dvc.yaml does not list as deps: {sorted(missing)}"


def test_the_checker_sees_function_level_imports():
    """The closure follows imports inside functions (a stage's __main__ imports its run module lazily)."""
    train = closure("tasks.train.__main__")
    assert ROOT / "tasks/train/run.py" in train and ROOT / "models/training_loop.py" in train
    assert ROOT / "tasks/artifacts/reviewed.py" in train and ROOT / "tasks/review/run.py" not in train


def test_review_merge_checks_against_the_faces_dvc_yaml_hands_the_review_stage():
    from tasks.review.cli import review_faces_path

    assert review_faces_path() == PARAMS["detect"]["out"]["faces"] == stage_inputs("review", ROOT)["faces"]


def test_stage_order_follows_the_data():
    order = list(DAG)
    assert order.index("scrape") < order.index("detect") < order.index("review") < order.index("tag")
    assert order.index("train") < order.index("render") and order.index("train") < order.index("export")
    assert topological_order(DAG) == order


@pytest.mark.parametrize("name", STAGES)
def test_every_dep_exists_or_is_made_upstream(name):
    """A dep that is neither on disk (a source file, ../shared) nor an out of an earlier stage fails `dvc repro`."""
    made = {o for s in DAG.values() for o in (*s.outs, *s.metrics, *s.plots)}
    missing = [d for d in DAG[name].deps if not (ROOT / d).exists() and not covered(d, made)]
    assert not missing, f"stage {name}: deps that do not exist: {missing}"


def test_tests_hold_no_python_programs_in_strings():
    """A test runs a real module or script file (tests/support/), never `python -c "<program>"`."""
    found = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").rglob("*.py")
                   if re.search(r"sys\.executable,\s*(\"-I\",\s*)?\"-c\"", f.read_text(encoding="utf-8")))
    assert not found, found


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_from_a_plain_shell_says_to_activate_the_environment(name):
    """dvc repro runs `python -m tasks.<stage>` with the `python` on PATH: from a shell where the project's
    environment is not active that python lacks the dependencies, and the stage says so in one line
    (exit 2) before any import can fail; it never re-executes the interpreter."""
    import os
    import subprocess
    import sys

    venv_bin = os.path.dirname(sys.executable)
    pythons = [os.path.join(d, "python3") for d in os.environ.get("PATH", "").split(os.pathsep)
               if d and os.path.abspath(d) != venv_bin and os.access(os.path.join(d, "python3"), os.X_OK)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for plain in pythons:  # `--help`: a python that has the dependencies only prints the usage
        r = subprocess.run([plain, "-m", f"tasks.{name}", "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, env=env)
        if r.returncode != 0:
            break
    else:
        pytest.skip("every python on PATH has the project's dependencies")
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "activate the project's environment" in r.stderr
