"""Which tag backend runs, and why: never a silent degradation.

- A backend named in params (`i2v`, `onnx`) whose files are missing is an error naming the key,
  the file and how to get it.
- `auto` takes i2v if its files are all present, else onnx, else `color`, and:
  - a tagger path the user set (one that differs from the shipped default, `TagConfig()`) and that
    does not exist is an error naming the key: a typo never turns into "colours only";
  - a tagger whose default files are partly there (say the converted weights but not
    tag_list.json) is an error naming the missing one: half an install is not "absent";
  - only when the default files of both taggers are absent does it fall back to `color`, with one
    loud warning per process that says what is lost and the command that fetches the weights.
The choice (backend + reason) goes into tags.parquet's metadata, data/tags/summary.json and the
dataset card. The reason names only shipped default paths, never a machine's own."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ConfigError, DataError
from tasks.params.tag import TagConfig

log = logging.getLogger(__name__)

I2V_RELEASE = "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0"
DEFAULT = TagConfig()
_warned: set[str] = set()


@dataclass(frozen=True)
class Choice:
    backend: str  # i2v | onnx | color
    reason: str  # one line: why this backend (deterministic, no machine path)
    fallback: bool = False  # auto found no tagger and fell back to colours only


def i2v_files(cfg: TagConfig) -> list[tuple[str, str, str]]:
    """(key, path, shipped default) of the files the i2v backend needs."""
    c, d = cfg.i2v, DEFAULT.i2v
    files = [("tag.i2v.weights", c.weights, d.weights), ("tag.i2v.tag_list", c.tag_list, d.tag_list)]
    if cfg.feature:
        files.append(("tag.i2v.feature_weights", c.feature_weights, d.feature_weights))
    return files


def onnx_files(cfg: TagConfig) -> list[tuple[str, str, str]]:
    c, d = cfg.onnx, DEFAULT.onnx
    return [("tag.onnx.model", c.model, d.model), ("tag.onnx.tags_csv", c.tags_csv, d.tags_csv)]


def i2v_fetch_command(cfg: TagConfig) -> str:
    """The commands that bring in the published Illustration2Vec files through DVC and convert
    them: `dvc update` of the import records where they exist, else `dvc import-url`."""
    c = cfg.i2v
    d = Path(c.weights).parent
    sources = ["illust2vec_tag_ver200.caffemodel", "tag_list.json.gz"] + (["illust2vec_ver200.caffemodel"] if cfg.feature else [])
    records = [f"{d}/{s}.dvc" for s in sources if (d / f"{s}.dvc").is_file()]
    fetch = [f"dvc update {' '.join(records)}"] if records else []
    fetch += [f"dvc import-url {I2V_RELEASE}/{s} {d}/" for s in sources if not (d / f"{s}.dvc").is_file()]
    convert = (f"python -m tasks.tools.convert tag --caffemodel {d}/illust2vec_tag_ver200.caffemodel "
               f"--tags {d}/tag_list.json.gz --out {c.weights} --tag-list-out {c.tag_list}")
    if cfg.feature:
        convert += (f" && python -m tasks.tools.convert feature --caffemodel {d}/illust2vec_ver200.caffemodel "
                    f"--out {c.feature_weights}")
    return " && ".join([*fetch, convert])


def onnx_fetch_command(cfg: TagConfig) -> str:
    return (f"huggingface-cli download SmilingWolf/wd-vit-tagger-v3 model.onnx selected_tags.csv "
            f"--local-dir {Path(cfg.onnx.model).parent}")


def _fix(name: str, cfg: TagConfig) -> str:
    if name == "i2v":
        return (f"bring in the published Illustration2Vec files ({I2V_RELEASE}/…) and convert them once: "
                f"`{i2v_fetch_command(cfg)}`")
    return (f"put a wd-tagger-style model and its tag list there, e.g. `{onnx_fetch_command(cfg)}`")


def _missing_message(name: str, key: str, path: str, cfg: TagConfig) -> str:
    return f"{key}: {path} not found (tag.backend {cfg.backend}, {name}); {_fix(name, cfg)}"


def _onnxruntime_problem() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "tag.backend onnx: onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)"
    return None


def _state(name: str, cfg: TagConfig) -> str:
    """'present' (every file there), or 'absent' (none there, all at their default paths); raises
    for a user-set path that does not exist and for a partial default install."""
    files = i2v_files(cfg) if name == "i2v" else onnx_files(cfg)
    missing = [(k, p, d) for k, p, d in files if not Path(p).is_file()]
    for key, path, default in missing:
        if path != default:
            raise ConfigError(f"{key}: {path} does not exist (you set it; the shipped default is {default}); "
                              f"fix the path, or remove the key to use the default")
    if not missing:
        return "present"
    if len(missing) == len(files):
        return "absent"
    key, path, _ = missing[0]
    have = ", ".join(p for _, p, _ in files if Path(p).is_file())
    raise DataError(f"{key}: {path} not found, but {have} is there: the {name} tagger is only partly installed; "
                    f"{_fix(name, cfg)}; or set tag.backend: color")


def choose_backend(cfg: TagConfig) -> Choice:
    """The backend `cfg` asks for, with why; see the module docstring for the rules."""
    if cfg.backend == "color":
        return Choice("color", "set in params (tag.backend: color)")
    if cfg.backend in ("i2v", "onnx"):
        files = i2v_files(cfg) if cfg.backend == "i2v" else onnx_files(cfg)
        for key, path, _ in files:
            if not Path(path).is_file():
                raise DataError(_missing_message(cfg.backend, key, path, cfg) + "; or set tag.backend to auto/color")
        if cfg.backend == "onnx" and (problem := _onnxruntime_problem()):
            raise DataError(problem)
        return Choice(cfg.backend, f"set in params (tag.backend: {cfg.backend})")
    i2v, onnx = _state("i2v", cfg), _state("onnx", cfg)
    if i2v == "present":
        return Choice("i2v", "auto: the Illustration2Vec weights are present")
    if onnx == "present":
        if problem := _onnxruntime_problem():
            raise DataError(f"{problem}; the onnx tagger files are present (tag.onnx.model)")
        return Choice("onnx", "auto: the onnx tagger is present (no Illustration2Vec weights)")
    return Choice("color", f"auto: no tagger weights ({DEFAULT.i2v.weights}, {DEFAULT.onnx.model} absent), "
                           "hair and eye colour only", fallback=True)


def fallback_warning(cfg: TagConfig) -> str:
    return ("tag.backend auto: NO TAGGER WEIGHTS at the default paths — tagging hair and eye colour only; "
            "the 11 hair-style, expression and accessory tags will be unknown (-1) for every face, so the "
            f"generator cannot be conditioned on them. Fetch the Illustration2Vec weights: `{i2v_fetch_command(cfg)}`, "
            "then `dvc repro -f tag`; or set tag.backend: color to choose colours on purpose.")


def warn_fallback_once(choice: Choice, cfg: TagConfig) -> None:
    """The loud warning of an auto fallback to colours, once per process."""
    if not choice.fallback:
        return
    msg = fallback_warning(cfg)
    if msg not in _warned:
        _warned.add(msg)
        log.warning("%s", msg)
