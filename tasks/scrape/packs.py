"""The image store's packs: its kept images as plain, uncompressed ustar tar files.

`packs/NNNNNN.tar` under the store holds up to `scrape.pack_images` images, each a member named
`<image_id>.<ext>`, with fixed headers (mtime 0, uid/gid 0, no user or group name, mode 0644) and no
padding past the two zero blocks that end an archive: the same members in the same order give the
same bytes, and `tar tf` / `tar xf` read a pack as any tar. A member's data starts on a 512-byte
block, so a record of (pack, offset, length) names its bytes (tasks.artifacts.images.read_image).

Nothing here knows the journal: the store (tasks.scrape.store) decides what goes where, and records
each pack it writes."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterable

from tasks.artifacts.images import EXT_FOR_FORMAT, read_image
from tasks.fileio import atomic_open

PACKS = "packs"  # the packs' directory under the store
BLOCK = 512
END = 2 * BLOCK  # two zero blocks end a tar archive


def pack_name(number: int) -> str:
    return f"{PACKS}/{number:06d}.tar"


def pack_number(rel: str) -> int:
    return int(rel[len(PACKS) + 1:-len(".tar")])


def is_pack(rel: str) -> bool:
    """Whether a store-relative path names a pack (else a loose image, waiting to be packed)."""
    return rel.startswith(f"{PACKS}/") and rel.endswith(".tar")


def member_name(rec: dict) -> str:
    return f"{rec['image_id']}.{EXT_FOR_FORMAT[rec['format']]}"


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def header(name: str, size: int) -> bytes:
    """A member's ustar header: nothing of the machine, the clock or the user in it."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, 0, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def layout(lengths: Iterable[int]) -> tuple[list[int], int]:
    """The offsets of members of these lengths written in this order, and the pack's size."""
    offsets, at = [], 0
    for n in lengths:
        offsets.append(at + BLOCK)
        at += BLOCK + _padded(n)
    return offsets, at + END


def consistent(root: Path, rel: str, recs: list[dict]) -> bool:
    """Whether the pack on disk is the one these records (every kept image they place in it) name:
    their members laid out one after the other from the start, and the file exactly that long. A
    kill between writing a pack and recording it leaves a pack this says no to (a member more, one
    less, or the records' offsets with a gap)."""
    recs = sorted(recs, key=lambda r: r["offset"])
    offsets, size = layout(r["length"] for r in recs)
    try:
        actual = (root / rel).stat().st_size
    except FileNotFoundError:
        return False
    return actual == size and offsets == [r["offset"] for r in recs]


def listing(root: Path, rel: str) -> dict[str, dict]:
    """image_id -> {pack, offset, length} of each member of the pack on disk (raises OSError or
    tarfile.TarError for a file that is no tar)."""
    out = {}
    with tarfile.open(root / rel, "r:") as tar:
        for m in tar.getmembers():
            if m.isreg():
                out[m.name.rsplit(".", 1)[0]] = {"pack": rel, "offset": m.offset_data, "length": m.size}
    return out


def write_pack(root: Path, rel: str, members: list[tuple[dict, dict]]) -> list[list]:
    """Write pack `rel` (atomically: a temp file beside it, then os.replace) from `members`, in this
    order: (kept record, where its bytes are now: a record of read_image's). Returns
    [image_id, offset, length] of each. The bytes come one image at a time: an old version of the
    same pack stays readable until the new one replaces it."""
    out = []
    offsets, size = layout(src["length"] for _, src in members)
    (root / PACKS).mkdir(exist_ok=True)
    with atomic_open(root / rel, "wb") as f:
        for (rec, src), offset in zip(members, offsets):
            data = read_image(root, src)
            f.write(header(member_name(rec), len(data)))
            f.write(data)
            f.write(b"\0" * (_padded(len(data)) - len(data)))
            out.append([rec["image_id"], offset, len(data)])
        f.write(b"\0" * END)
        if f.tell() != size:  # a record's length is not its file's
            raise OSError(f"{root / rel}: wrote {f.tell()} bytes, the layout says {size}")
    return out
