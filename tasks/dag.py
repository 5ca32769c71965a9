"""dvc.yaml, read: the one DAG definition, for the code that needs to know it (the pipeline
flow's stage order, each stage flow's metrics file, the dependency-completeness test, and a
command outside the DAG that needs the paths dvc.yaml hands a stage: `stage_inputs`).

Paths are templated from params.yaml (`${detect.out.faces}`) as DVC templates them; the stage
order is the topological order of the outs -> deps edges, file order breaking ties."""

from __future__ import annotations

import functools
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.errors import ConfigError
from tasks.params import read_yaml

DVC_YAML = "dvc.yaml"
_TEMPLATE = re.compile(r"\$\{\s*([\w.]+)\s*\}")


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # dotted keys of params.yaml
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    plots: tuple[str, ...]


def _lookup(data: dict, dotted: str, where: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{where}: ${{{dotted}}} is not a key of params.yaml")
        node = node[part]
    return node


def _resolve(value: str, params: dict, where: str) -> str:
    return _TEMPLATE.sub(lambda m: str(_lookup(params, m.group(1), where)), value)


def _paths(entries, params: dict, where: str) -> tuple[str, ...]:
    """A dvc.yaml list of paths (plain strings or {path: options} mappings), resolved."""
    out = []
    for e in entries or []:
        for p in ([e] if isinstance(e, str) else list(e)):
            out.append(_resolve(p, params, where))
    return tuple(out)


def _params(entries) -> tuple[str, ...]:
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append(e)
        else:  # {file: [keys]}: other params files are not used by moeflow
            raise ConfigError(f"{DVC_YAML}: params from another file ({e}) are not supported")
    return tuple(out)


def dvc_executable() -> str:
    """The `dvc` beside this interpreter (the project's venv, whatever PATH says), else the one on PATH."""
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else "dvc"


def load_dag(root: str | Path = ".", params_file: str = "params.yaml") -> dict[str, Stage]:
    """The stages of dvc.yaml in DAG order, with paths resolved against params.yaml."""
    root = Path(root)
    try:
        spec = yaml.safe_load((root / DVC_YAML).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{root / DVC_YAML} not found (run from the project root)") from None
    params = read_yaml(root / params_file)
    stages = {}
    for name, s in (spec.get("stages") or {}).items():
        where = f"{DVC_YAML}: stage {name}"
        cmd = s.get("cmd", "")
        cmd = " ".join(cmd) if isinstance(cmd, list) else _resolve(str(cmd), params, where)
        stages[name] = Stage(name, cmd, _paths(s.get("deps"), params, where), _params(s.get("params")),
                             _paths(s.get("outs"), params, where), _paths(s.get("metrics"), params, where),
                             _paths(s.get("plots"), params, where))
    return {n: stages[n] for n in topological_order(stages)}


def stage_inputs(stage: str, root: str | Path = ".") -> dict[str, str]:
    """The `--name PATH` options dvc.yaml's cmd hands `stage` (e.g. {"faces": "data/faces/faces.parquet"})."""
    dag = load_dag(root)
    if stage not in dag:
        raise ConfigError(f"{Path(root) / DVC_YAML}: no stage {stage!r}")
    words, out = shlex.split(dag[stage].cmd), {}
    for i, w in enumerate(words):
        if w.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--") and w != "--params":
            out[w[2:].replace("-", "_")] = words[i + 1]
    return out


@functools.lru_cache(maxsize=4096)
def _parts(path: str) -> tuple[str, ...]:
    return Path(path).parts


def _under(path: str, out: str) -> bool:
    """Whether one path is the other or inside it (compared by parts: a load_dag compares thousands of pairs)."""
    p, o = _parts(path), _parts(out)
    n = min(len(p), len(o))
    return p[:n] == o[:n]


def upstream(stages: dict[str, Stage], name: str) -> set[str]:
    """The stages whose outs (outs, metrics or plots) the stage `name` depends on."""
    st = stages[name]
    return {other.name for other in stages.values() if other.name != name
            and any(_under(d, o) for d in st.deps for o in (*other.outs, *other.metrics, *other.plots))}


def topological_order(stages: dict[str, Stage]) -> list[str]:
    names, done = list(stages), []
    pending = {n: upstream(stages, n) for n in names}
    while pending:
        ready = [n for n in names if n in pending and not (pending[n] - set(done))]
        if not ready:
            raise ConfigError(f"{DVC_YAML}: the stages {', '.join(sorted(pending))} depend on each other in a cycle")
        done.append(ready[0])
        del pending[ready[0]]
    return done
