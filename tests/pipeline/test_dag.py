"""dvc.yaml is complete: every stage lists as deps the project modules it really imports (its
entry point and everything that imports, at module level or inside a function), as params the
params.yaml keys its code reads, and as deps the input files those keys name. A stage that
reads something DVC does not know about would not rerun when it changes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tasks.dag import load_dag, topological_order
from tests.conftest import ROOT

PACKAGES = ("flows", "tasks", "models")
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DAG = load_dag(ROOT)
ACCESS = re.compile(r"\bparams\.((?:[a-z_]\w*)(?:\.[a-z_]\w*)*)")
PATHLIKE = re.compile(r"^[\w.~-]*[/\\].*|.*\.(?:csv|xml|json|parquet|onnx|safetensors|gz|txt)$")
# Inputs a stage may read without DVC tracking them, and why.
NOT_DEPS = {
    ("render", "tag.out"): "render builds the tag stage's backend from tag params; it reads none of its outputs",
}


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


def resolve_key(dotted: str) -> str | None:
    """The longest prefix of `dotted` that is a key of params.yaml (None: not a params access)."""
    node, keep = PARAMS, []
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        node, keep = node[part], keep + [part]
    return ".".join(keep) or None


def leaves(dotted: str):
    node = PARAMS
    for part in dotted.split("."):
        node = node[part]
    stack = [(dotted, node)]
    while stack:
        key, v = stack.pop()
        if isinstance(v, dict):
            stack += [(f"{key}.{k}", x) for k, x in v.items()]
        else:
            yield key, v


def params_read(stage) -> set[str]:
    keys = set()
    for f in closure(entry_module(stage)):
        for m in ACCESS.finditer(f.read_text(encoding="utf-8")):
            key = resolve_key(m.group(1))
            if key:
                keys.add(key)
    return keys


def listed(key: str, params) -> bool:
    return any(key == p or key.startswith(p + ".") for p in params)


@pytest.mark.parametrize("name", list(DAG))
def test_stage_depends_on_every_module_it_imports(name):
    stage = DAG[name]
    missing = sorted(str(f.relative_to(ROOT)) for f in closure(entry_module(stage))
                     if not covered(str(f.relative_to(ROOT)), stage.deps))
    assert not missing, f"stage {name} imports modules dvc.yaml does not list as deps: {missing}"


@pytest.mark.parametrize("name", list(DAG))
def test_stage_lists_every_param_it_reads(name):
    stage = DAG[name]
    missing = sorted(k for k in params_read(stage) if not listed(k, stage.params))
    assert not missing, f"stage {name} reads params dvc.yaml does not list: {missing}"


@pytest.mark.parametrize("name", list(DAG))
def test_stage_depends_on_every_file_its_params_name(name):
    stage = DAG[name]
    outs = (*stage.outs, *stage.metrics, *stage.plots)
    missing = []
    for key in params_read(stage):
        for leaf, value in leaves(key):
            if any(leaf == k or leaf.startswith(k + ".") for s, k in NOT_DEPS if s == name):
                continue
            if not isinstance(value, str) or "://" in value or not PATHLIKE.match(value):
                continue
            if covered(value, outs) or any(Path(value) in Path(o).parents for o in outs):
                continue  # something this stage writes
            if not covered(value, stage.deps):
                missing.append(f"{leaf} = {value}")
    assert not missing, f"stage {name} reads files dvc.yaml does not list as deps: {sorted(missing)}"


def test_the_checker_sees_function_level_imports_and_params():
    """The closure follows imports inside functions (tasks.train.run imports reviewed_faces lazily)."""
    train = closure("tasks.train.__main__")
    assert ROOT / "tasks/review/selection.py" in train and ROOT / "models/training_loop.py" in train
    assert {"review.unreviewed", "review.decisions", "train"} <= params_read(DAG["train"])


def test_stage_order_follows_the_data():
    order = list(DAG)
    assert order.index("scrape") < order.index("detect") < order.index("review") < order.index("tag")
    assert order.index("train") < order.index("render") and order.index("train") < order.index("export")
    assert topological_order(DAG) == order


@pytest.mark.parametrize("name", list(DAG))
def test_every_dep_exists_or_is_made_upstream(name):
    """A dep that is neither on disk (a source file, ../shared) nor an out of an earlier stage fails `dvc repro`."""
    made = {o for s in DAG.values() for o in (*s.outs, *s.metrics, *s.plots)}
    missing = [d for d in DAG[name].deps if not (ROOT / d).exists() and not covered(d, made)]
    assert not missing, f"stage {name}: deps that do not exist: {missing}"
