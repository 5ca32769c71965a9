"""moeflow stage logic: plain typed functions, no Prefect imports required.

`dvc repro` runs each stage as `python -m tasks.<stage>` with the `python` on PATH. From a shell
where the project's environment is not activated that is the system's python, without
moeflow's dependencies: then the stage re-executes itself with the project's .venv/bin/python
when there is one, or stops with one line that says how to activate the environment."""

import importlib.util
import os
import sys
from pathlib import Path

_REQUIRED = ("yaml", "numpy", "pyarrow", "PIL", "cv2", "torch", "requests")  # what the stages import


def _ensure_environment() -> None:
    missing = [m for m in _REQUIRED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    venv_python = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    if venv_python.is_file() and os.environ.get("MOEFLOW_REEXEC") != "1" and sys.orig_argv[1:2] == ["-m"]:
        os.environ["MOEFLOW_REEXEC"] = "1"  # once: a broken .venv must not loop
        os.execv(str(venv_python), [str(venv_python), *sys.orig_argv[1:]])
    sys.stderr.write(f"error: {sys.executable} lacks moeflow's dependencies ({', '.join(missing)}): activate the "
                     "project's environment (`source .venv/bin/activate`, made by `make demo` or `make venv`) "
                     "before `dvc repro`\n")
    raise SystemExit(2)


_ensure_environment()
