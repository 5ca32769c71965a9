"""A static file server for the web page (`make web`, the web tests, the benchmark): serves
web/dist with the cross-origin isolation headers (COOP/COEP) that WASM threads need, the
right MIME types for .mjs / .wasm / .onnx, and optional extra folders mounted under a prefix
(the tests mount their tiny model at /model/).

    python -m tasks.tools.webserve [--root web/dist] [--port 8000] [--host 127.0.0.1]"""

from __future__ import annotations

import argparse
import functools
import http.server
import logging
import posixpath
import sys
import threading
import urllib.parse
from pathlib import Path

log = logging.getLogger(__name__)

ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}
EXTRA_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
               ".onnx": "application/octet-stream", ".json": "application/json"}


class Handler(http.server.SimpleHTTPRequestHandler):
    mounts: dict[str, Path] = {}
    isolate = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **EXTRA_TYPES}

    def translate_path(self, path: str) -> str:
        clean = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        for prefix, folder in self.mounts.items():
            if clean.startswith(prefix):
                rel = clean[len(prefix):].lstrip("/")
                target = (folder / rel).resolve()
                if folder.resolve() in target.parents or target == folder.resolve():
                    return str(target)
                return str(folder / "__forbidden__")
        return super().translate_path(path)

    def end_headers(self) -> None:
        if self.isolate:
            for k, v in ISOLATION_HEADERS.items():
                self.send_header(k, v)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 0, mounts: dict[str, str | Path] | None = None,
                isolate: bool = True) -> http.server.ThreadingHTTPServer:
    """A server for `root` (port 0: any free port; see .server_address). mounts: {"/model/": folder}."""
    handler = type("MoeflowHandler", (Handler,), {
        "mounts": {("/" + k.strip("/") + "/"): Path(v) for k, v in (mounts or {}).items()}, "isolate": isolate})
    server = http.server.ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(root)))
    server.daemon_threads = True
    return server


def serve_in_thread(root, **kwargs) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a server in a daemon thread; returns (server, base URL). Call server.shutdown()."""
    server = make_server(root, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True, name="webserve").start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.tools.webserve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="web/dist")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--no-isolation", action="store_true", help="no COOP/COEP headers (WASM runs single-threaded)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not (root / "index.html").is_file():
        print(f"error: {root}/index.html not found: build the page first (make web)", file=sys.stderr)
        return 1
    if not (root / "model" / "model.json").is_file():
        print(f"warning: {root}/model/model.json not found: run the export stage (dvc repro export), then rebuild",
              file=sys.stderr)
    server = make_server(root, args.host, args.port, isolate=not args.no_isolation)
    print(f"serving {root} at http://{args.host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
