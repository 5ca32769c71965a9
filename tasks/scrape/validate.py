"""Image validation: a full decode with Pillow against scrape.filters.

It runs in worker processes (a process pool fed with the downloaded files), so it imports
nothing heavy and what it raises crosses a process boundary intact."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from tasks.scrape.config import FilterConfig

# What a decoder says about bytes that may have been cut short: a verdict only when the
# transport confirmed the body was complete (see tasks.http.Download.framed).
CUT_SHORT = ("truncated", "corrupt", "not_image")


class Rejected(Exception):
    """A judged download that is not kept: `reason` is stable, `detail` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)  # both in args: it pickles back whole
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def exit_with_parent() -> None:
    """Pool initializer: a decoder ends as soon as the process that started it does, even when
    that one is SIGKILLed (its queues would otherwise keep the decoder waiting forever)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


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
