"""Build the page, install the browser, serve and drive it (shared by tests/export/test_web.py and bench/web.py)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CHROMIUM = os.environ.get("MOEFLOW_CHROMIUM", "/usr/bin/chromium")


class BrowserUnavailable(RuntimeError):
    """Chromium is not installed and scripts/install_browser.sh could not install it."""


def ensure_browser() -> str:
    """Run scripts/install_browser.sh (a no-op when chromium is there); the chromium path."""
    r = subprocess.run(["bash", str(ROOT / "scripts/install_browser.sh")], capture_output=True, text=True, timeout=900)
    if r.returncode != 0 or not Path(CHROMIUM).exists():
        raise BrowserUnavailable(f"chromium could not be installed by scripts/install_browser.sh: "
                                 f"{(r.stderr or r.stdout).strip()[-500:]}")
    return CHROMIUM


def ensure_node_modules() -> None:
    """`npm ci` in web/ when node_modules is missing (make web-deps does it before the tests)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are needed to build the web page (Node >= 20)")
    if not (WEB / "node_modules/onnxruntime-web/package.json").is_file():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True, timeout=900)


def build_page(out: Path) -> Path:
    """The page built into `out` (without web/public: callers mount their own model)."""
    ensure_node_modules()
    subprocess.run(["node", str(WEB / "build.mjs"), str(out), "--no-public"], check=True, timeout=300,
                   capture_output=True, text=True)
    return out


def drive(url: str, timeout_s: float = 240, **opts) -> dict:
    """scripts/web_driver.mjs on `url`: the page's pixels, timings, console errors (+ bench, screenshot)."""
    r = subprocess.run(["node", str(ROOT / "scripts/web_driver.mjs"), json.dumps({"url": url, **opts})],
                       capture_output=True, text=True, timeout=timeout_s)
    try:
        result = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError(f"web_driver.mjs printed no result (rc {r.returncode}): {r.stderr[-2000:]}") from None
    if not result.get("ok"):
        raise RuntimeError(f"web_driver.mjs failed: {result.get('error')}\nconsole: {result.get('console')}")
    return result


def rgb(pixels: dict) -> np.ndarray:
    """The driver's base64 RGBA canvas as an (H, W, 3) uint8 array."""
    a = np.frombuffer(base64.b64decode(pixels["rgba"]), np.uint8).reshape(pixels["height"], pixels["width"], 4)
    assert (a[..., 3] == 255).all()
    return a[..., :3]
