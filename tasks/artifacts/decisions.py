"""The reviewer's decisions (review/false_positives.csv, git-tracked, edited by people) and the
one reader of people-edited CSV files (the decisions, the review queue, optout.csv).

Reading accepts what spreadsheet programs write (UTF-8 with or without BOM, LF or CRLF,
`,` `;` or tab as delimiter, quoted fields, multi-line quoted cells) and rejects anything
ambiguous with a ReviewError naming the file, line and value, a control character in a cell
(NUL and the like, `control_problem`) included. Writing escapes every cell that a spreadsheet
would take for a formula: a leading `'` is added (see `escape_cell`), and `unescape_cell`
removes exactly what `escape_cell` added, so what the pipeline writes reads back unchanged.

Verdicts follow near-duplicate groups (`applied_decisions`):
detect keeps one face of each group of near-duplicates and points the others at it
(`duplicate_of`). Which member is kept can change when images are added (a larger copy
arrives), so a verdict recorded on the face kept then must still apply once another member
is kept: the decision that applies to a kept face is taken from its whole group (itself and
every face whose `duplicate_of` chain leads to it). A false positive on any member wins;
otherwise a fine verdict on any member applies; the kept face's own decision comes first."""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import MoeflowError, ReviewError
from tasks.fileio import atomic_write_bytes

# Leading characters a spreadsheet evaluates (=, +, -, @) plus tab and CR (OWASP's list).
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
DECISION_COLUMNS = ("face_id", "false_positive", "reviewer", "note")
QUEUE_COLUMNS = ("face_id", "thumbnail", "url", "detector", "score", "false_positive", "reviewer", "note")
REQUIRED = ("face_id", "false_positive")
FACE_ID_RE = re.compile(r"[0-9a-f]{64}")
_NUMBERISH = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:E[-+]?\d+)?", re.IGNORECASE)

# Control characters a person's CSV cell may not hold: NUL and the other C0 codes, DEL and the C1
# codes. They are invisible in a spreadsheet, and one NUL makes git take the file for binary (no
# diff, no merge). Tab, CR and LF stay allowed inside a quoted cell: a spreadsheet writes a
# multi-line note that way, and git reads it as text.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

TRUE_WORDS = {"1", "true", "yes", "x"}
FALSE_WORDS = {"0", "false", "no"}


def escape_cell(value: str) -> str:
    """Make a cell inert in a spreadsheet: prefix `'` when it begins with = + - @ (or tab/CR),
    and when it begins with `'` that a reader would otherwise strip (so the round trip is exact)."""
    if value and (value[0] in FORMULA_CHARS or (value[0] == "'" and unescape_cell(value) != value)):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """Undo `escape_cell`: drop one leading `'` that precedes a formula character or another `'`."""
    if len(value) > 1 and value[0] == "'" and (value[1] in FORMULA_CHARS or value[1] == "'"):
        return value[1:]
    return value


def control_problem(value: str) -> str | None:
    """Why `value` cannot be a cell of a people-edited CSV (a control character), or None."""
    m = CONTROL_RE.search(value)
    return None if m is None else f"control character U+{ord(m.group()):04X} in {value[:60]!r}"


def parse_verdict(value: str) -> bool | None:
    """1/true/yes/x = false positive; 0/false/no = checked and fine; blank = undecided.
    Raises ValueError for anything else."""
    v = value.strip().lower()
    if not v:
        return None
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise ValueError(v)


@dataclass
class CsvTable:
    """A parsed CSV: its dialect (to append in kind), header, and rows with their line numbers."""

    path: Path
    delimiter: str = ","
    newline: str = "\n"
    bom: bool = False
    header: list[str] = field(default_factory=list)
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    face_id: str
    false_positive: bool
    reviewer: str = ""
    note: str = ""
    line: int = 0


def read_csv(path: str | Path, allowed: tuple[str, ...], *, key: str = "face_id",
             required: tuple[str, ...] = REQUIRED, expected: tuple[str, ...] = DECISION_COLUMNS,
             error: type[MoeflowError] = ReviewError, problems: list[str] | None = None) -> CsvTable:
    """Parse a people-edited CSV. Columns must be a subset of `allowed` and include `required`;
    the header is the line holding `key` (which also tells the delimiter). The review CSVs use the
    defaults; another file (optout.csv) names its own columns and error class. A problem in the
    header or the encoding raises at once; with a `problems` list, a problem in a row is appended
    to it (one line each, naming the file, the line and the value) and reading goes on."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    bom = raw.startswith(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(f"{path}: line {line}: byte {raw[e.start]:#04x} is not UTF-8 (save the file as 'CSV UTF-8')") from None
    table = CsvTable(path=path, bom=bom, newline="\r\n" if "\r\n" in text else "\n")
    first = text.splitlines()[0] if text.strip() else ""
    if not first.strip():
        raise error(f"{path}: line 1: empty, expected the header {','.join(expected)}")
    for delim in (",", ";", "\t"):
        names = [unescape_cell(c).strip().lower() for c in next(csv.reader([first], delimiter=delim))]
        if key in names:
            table.delimiter = delim
            break
    else:
        raise error(f"{path}: line 1: no {key} column in header {first!r} "
                    f"(expected {','.join(expected)}; `,` `;` or tab between names)")
    seen = set()
    for name in names:
        if name and name not in allowed:
            raise error(f"{path}: line 1: unknown column {name!r} (allowed: {', '.join(allowed)})")
        if name and name in seen:
            raise error(f"{path}: line 1: column {name!r} appears twice")
        seen.add(name)
    for name in required:
        if name not in seen:
            raise error(f"{path}: line 1: missing column {name!r} (header {first!r})")
    table.header = names

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=table.delimiter, strict=True)
    prev = 0
    try:
        for i, cells in enumerate(reader):
            line, prev = prev + 1, reader.line_num
            if i == 0:
                continue
            try:
                _add_row(table, line, cells, error)
            except MoeflowError as e:
                if problems is None:
                    raise
                problems.append(str(e))
    except csv.Error as e:
        raise error(f"{path}: line {prev + 1}: not valid CSV: {e}") from None
    return table


def _add_row(table: CsvTable, line: int, cells: list[str], error: type[MoeflowError] = ReviewError) -> None:
    names = table.header
    for i, cell in enumerate(cells):
        problem = control_problem(cell)
        if problem:
            column = names[i] if i < len(names) and names[i] else f"field {i + 1}"
            raise error(f"{table.path}: line {line}: {column}: {problem} (a cell holds printable text: delete the "
                        "character)")
    if not any(c.strip() for c in cells):
        return  # blank line
    extra = [c for c in cells[len(names):] if c.strip()]
    if extra:
        raise error(f"{table.path}: line {line}: {len(cells)} fields but the header has {len(names)} "
                    f"(value {extra[0]!r}; a stray {table.delimiter!r}? quote cells that contain it)")
    values: dict[str, str] = {}
    for name, cell in zip(names, cells):
        if not name:
            if cell.strip():
                raise error(f"{table.path}: line {line}: value {cell!r} in a column without a name")
            continue
        values[name] = unescape_cell(cell)
    table.rows.append((line, values))


def face_id_problem(value: str) -> str | None:
    """Why `value` cannot be a face_id (a sha256 hex digest), or None."""
    if FACE_ID_RE.fullmatch(value):
        return None
    hint = ""
    if _NUMBERISH.fullmatch(value):
        hint = "; the spreadsheet turned it into a number: import the face_id column as Text"
    return f"face_id {value!r} is not a face id (64 hex digits){hint}"


def decisions_of(table: CsvTable) -> dict[str, Decision]:
    """face_id -> Decision for every row with a verdict. Rows with a blank verdict are undecided
    and skipped. The same face_id twice with the same verdict is fine; with different ones, an error."""
    out: dict[str, Decision] = {}
    for line, values in table.rows:
        fid = values.get("face_id", "").strip().lower()
        raw = values.get("false_positive", "")
        try:
            verdict = parse_verdict(raw)
        except ValueError:
            raise ReviewError(f"{table.path}: line {line}: false_positive {raw.strip()!r} is not a verdict "
                              "(1/true/yes/x = false positive, 0/false/no = fine, blank = undecided)") from None
        if not fid:
            if verdict is None:
                continue
            raise ReviewError(f"{table.path}: line {line}: empty face_id with false_positive {raw.strip()!r}")
        problem = face_id_problem(fid)
        if problem:
            raise ReviewError(f"{table.path}: line {line}: {problem}")
        if verdict is None:
            continue
        old = out.get(fid)
        if old is not None:
            if old.false_positive != verdict:
                raise ReviewError(f"{table.path}: line {line}: face_id {fid} has false_positive={int(verdict)} "
                                  f"but line {old.line} says {int(old.false_positive)}; keep one")
            continue
        out[fid] = Decision(fid, verdict, values.get("reviewer", "").strip(), values.get("note", ""), line)
    return out


def read_decisions(path: str | Path, allowed: tuple[str, ...] = DECISION_COLUMNS) -> tuple[CsvTable, dict[str, Decision]]:
    table = read_csv(path, allowed)
    return table, decisions_of(table)


def render_csv(header: list[str] | tuple[str, ...], rows: list[dict], delimiter: str = ",", newline: str = "\n",
               write_header: bool = True) -> str:
    """CSV text with every cell escaped for spreadsheets."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator=newline)
    if write_header:
        w.writerow(header)
    for row in rows:
        w.writerow([escape_cell(str(row.get(c, "") if row.get(c) is not None else "")) for c in header])
    return buf.getvalue()


def append_decisions(path: str | Path, table: CsvTable | None, new: list[Decision]) -> None:
    """Append `new` to the decisions file, byte-for-byte keeping every existing line, in the file's own
    delimiter and line ending. Creates the file (with its header) if missing. Atomic."""
    path = Path(path)
    rows = [{"face_id": d.face_id, "false_positive": "1" if d.false_positive else "0",
             "reviewer": d.reviewer, "note": d.note} for d in new]
    if table is None:
        header = list(DECISION_COLUMNS)
        head = render_csv(header, [], ",", "\n").encode()
        body = b""
        delimiter, newline = ",", "\n"
    else:
        raw = path.read_bytes()
        header = list(table.header)
        delimiter, newline = table.delimiter, table.newline
        missing = [c for c in ("reviewer", "note") if c not in header and any(r[c] for r in rows)]
        end = raw.find(b"\n")
        head, body = (raw, b"") if end < 0 else (raw[: end + 1], raw[end + 1:])
        if missing:  # widen the header only; older rows read the new columns as blank
            header += missing
            head = (codecs.BOM_UTF8 if table.bom else b"") + render_csv(header, [], delimiter, newline).encode()
        elif not head.endswith(b"\n"):
            head += newline.encode()
        if body and not body.endswith(b"\n"):
            body += newline.encode()
    text = render_csv(header, rows, delimiter, newline, write_header=False)
    atomic_write_bytes(path, head + body + text.encode("utf-8"))


def load_decisions(decisions_csv: str | Path) -> tuple[CsvTable, dict[str, Decision]]:
    """Read and validate the decisions CSV (a missing file is an error: it is git-tracked)."""
    path = Path(decisions_csv)
    if not path.exists():
        raise ReviewError(f"{path}: file not found; it is git-tracked and starts as the header line "
                          f"{','.join(DECISION_COLUMNS)}")
    return read_decisions(path)



def applied_decisions(faces: pa.Table, decisions: dict[str, Decision]) -> dict[str, Decision]:
    """kept face_id -> the decision that applies to it: one on its group (itself, then the faces whose
    `duplicate_of` chain leads to it, by face_id), a false positive first. Holds Python objects for the
    decided faces and the chains from them only, never one per face of `faces`: each step along the
    chains finds its faces in one columnar pass over `faces`."""
    info: dict[str, tuple[str | None, int | None]] = {}  # face_id -> (duplicate_of, row of it kept or None)

    def look_up(wanted: set[str]) -> None:
        wanted = wanted - info.keys()
        if not wanted:
            return
        at = pc.indices_nonzero(pc.is_in(faces["face_id"], value_set=pa.array(sorted(wanted), pa.string())))
        found = faces.select(["face_id", "duplicate_of", "drop_reason"]).take(at)
        info.update((f, (None, None)) for f in wanted)  # not a face: no duplicate_of, not kept
        for row, f, dup, drop in zip(at.to_pylist(), *(found[c].to_pylist() for c in found.column_names)):
            kept = info[f][1]  # a face_id on several rows (never from detect): the last duplicate_of, the first kept row
            info[f] = (dup, row if kept is None and drop is None else kept)

    look_up(set(decisions))
    # follow each decided face's chain until a kept face, its end, or a loop
    walking = {fid: (info[fid][0], {fid}) for fid in decisions}
    ends: dict[str, str | None] = {}
    while walking:
        look_up({root for root, _ in walking.values() if root is not None})
        on = {}
        for fid, (root, seen) in walking.items():
            if root is not None and info[root][1] is None and root not in seen:
                seen.add(root)
                on[fid] = (info[root][0], seen)
            else:
                ends[fid] = root
        walking = on
    groups: dict[str, list[str]] = {}  # kept face_id -> its decided members
    for fid in sorted(decisions):
        if info[fid][1] is not None:
            groups.setdefault(fid, []).append(fid)
        root = ends[fid]
        if root is not None and info[root][1] is not None and root != fid:
            groups.setdefault(root, []).append(fid)
    out: dict[str, Decision] = {}
    for kept in sorted(groups, key=lambda k: info[k][1]):  # in the order of the kept faces in `faces`
        found = [decisions[m] for m in sorted(groups[kept], key=lambda m: (m != kept, m))]
        out[kept] = next((d for d in found if d.false_positive), found[0])
    return out
