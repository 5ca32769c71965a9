from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def deep_update(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"test data not found at {SHARED} (the project expects ../shared beside the repo)")
    return SHARED
