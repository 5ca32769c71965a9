"""Image validation: a full decode with Pillow against scrape.filters, and the pool of
worker processes that runs it off the download threads.

The workers are plain `python -m tasks.scrape.validate` subprocesses fed one path at a time
over a pipe, not multiprocessing: they never import the caller's __main__ (a script that
calls scrape() needs no main guard), and a worker ends when its stdin closes, so none
outlives a stage that was killed."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tasks.errors import Rejected
from tasks.params.scrape import FilterConfig

# What a decoder says about bytes that may have been cut short: a verdict only when the
# transport confirmed the body was complete (see tasks.http.Download.framed).
CUT_SHORT = ("truncated", "corrupt", "not_image")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where the `tasks` package lives


class DecoderCrashed(Exception):
    """The worker process died while judging a file (a decoder fault, or the OS killed it)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def validate_image(path: str, filters: FilterConfig) -> ImageInfo:
    """Decode fully with Pillow; raise Rejected with a reason if the file is not kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                fmt = im.format or "?"
                if fmt not in filters.formats:
                    raise Rejected("format", fmt)
                w, h = im.size
                if w * h > filters.max_pixels:
                    raise Rejected("too_many_pixels", f"{w}x{h}")
                im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Rejected("too_many_pixels", str(e)) from None
        except UnidentifiedImageError:
            raise Rejected("not_image", "Pillow cannot identify the file") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
            raise Rejected(reason, str(e)) from None
    if w < filters.min_width or h < filters.min_height:
        raise Rejected("too_small", f"{w}x{h}")
    return ImageInfo(fmt, w, h)


class Decoders:
    """`n` worker processes judging downloaded files; `submit(path)` returns a Future of
    ImageInfo (or Rejected, or DecoderCrashed). Each worker starts with its first file."""

    def __init__(self, n: int, filters: FilterConfig):
        self._filters = json.dumps(dataclasses.asdict(filters))
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, name=f"decoder-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, path: str) -> Future:
        fut: Future = Future()
        self._jobs.put((path, fut))
        return fut

    def shutdown(self) -> None:
        """Finish what was submitted, then stop the workers."""
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()

    def _start(self) -> subprocess.Popen:
        path = [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
        return subprocess.Popen([sys.executable, "-m", "tasks.scrape.validate", self._filters], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, encoding="utf-8",
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)})

    def _serve(self) -> None:
        proc = None
        try:
            while (job := self._jobs.get()) is not None:
                path, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    proc = proc or self._start()
                    proc.stdin.write(json.dumps(path) + "\n")
                    proc.stdin.flush()
                    answer = proc.stdout.readline()
                except BrokenPipeError:
                    answer = ""
                except BaseException as e:  # the future must always be answered
                    fut.set_exception(e)
                    continue
                if not answer:
                    code = proc.wait()
                    proc = None
                    fut.set_exception(DecoderCrashed(f"the decoder process died (exit status {code})"))
                    continue
                out = json.loads(answer)
                if "ok" in out:
                    fut.set_result(ImageInfo(*out["ok"]))
                else:
                    fut.set_exception(Rejected(*out["rejected"]))
        finally:
            if proc is not None:
                proc.stdin.close()
                proc.wait()


def _worker(filters_json: str) -> int:
    """One worker: a JSON path per line in, a JSON verdict per line out, until stdin closes."""
    d = json.loads(filters_json)
    filters = FilterConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    warnings.simplefilter("ignore")  # Pillow's notes on odd EXIF and the like; bombs are errors in validate_image
    answers, sys.stdout = sys.stdout, sys.stderr  # stray prints must not garble the answers
    for line in sys.stdin:
        try:
            info = validate_image(json.loads(line), filters)
            out = {"ok": [info.format, info.width, info.height]}
        except Rejected as e:
            out = {"rejected": [e.reason, e.detail]}
        answers.write(json.dumps(out) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
