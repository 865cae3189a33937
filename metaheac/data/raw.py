"""Streaming parsers for the raw Tencent Look-alike files.

`userFeature.data` is several GB: it is read in blocks of lines and parsed with Arrow's vectorized
string kernels, never as one frame. A cheap whole-line shape check flags bad lines; only those are
re-read in Python, to say exactly what is wrong with them.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from metaheac.data.errors import InputError, Problems, quote

BLOCK_BYTES = 2 << 20  # small blocks keep the parse temporaries (about 15x the block) small
BOM = b"\xef\xbb\xbf"
_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_IDS = r"[0-9]{1,18}( [0-9]{1,18})*"
_LINE_SHAPE = rf"^{_NAME} {_IDS}(\|{_NAME} {_IDS})*$"


@dataclass
class LineBlock:
    first_line: int  # 1-based number of the block's first line
    lines: pa.StringArray  # without line endings
    truncated_last: bool  # the file's last line had no newline: it may be cut short


def line_blocks(stream: BinaryIO, block_bytes: int = BLOCK_BYTES) -> Iterator[LineBlock]:
    """Blocks of whole lines, CRLF or LF, as zero-copy Arrow string arrays; a leading UTF-8 BOM is dropped."""
    line_no = 1
    carry = stream.read(len(BOM))
    if carry == BOM:
        carry = b""
    while True:
        chunk = stream.read(block_bytes)
        data = carry + chunk
        if not data:
            return
        end = data.rfind(b"\n") + 1 if chunk else len(data)
        if end == 0:  # no newline yet: read more
            carry = data
            continue
        body, carry = data[:end], data[end:]
        lines = _split_lines(body, ends_with_newline=body.endswith(b"\n"))
        yield LineBlock(line_no, lines, truncated_last=not chunk and not body.endswith(b"\n"))
        line_no += len(lines)
        if not chunk:
            return


def _split_lines(body: bytes, ends_with_newline: bool) -> pa.StringArray:
    buf = np.frombuffer(body, dtype=np.uint8)
    newline = buf == 10
    # a CR right before LF belongs to the line ending
    cr = np.zeros_like(newline)
    cr[:-1] = (buf[:-1] == 13) & newline[1:]
    removed = np.flatnonzero(newline | cr)  # a line or two per line: cheap, unlike per-byte sums
    ends = np.flatnonzero(newline)
    if not ends_with_newline:
        ends = np.append(ends, len(buf))
    # line i's kept bytes end where its newline was, less the bytes removed before it
    offsets = np.concatenate([[0], ends - np.searchsorted(removed, ends)]).astype(np.int32)
    data = np.delete(buf, removed)
    array = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        text = [line.decode("utf-8", "replace") for line in body.split(b"\n")[: len(ends)]]
        array = pa.array([t.rstrip("\r") for t in text], pa.string())
    return array


# ---- userFeature.data ---------------------------------------------------------------------


@dataclass
class ParsedBlock:
    """A block's users with raw ids, before vocabulary encoding (which must run in file order)."""

    line: np.ndarray  # int64 [n]: the file line of each good user line
    uid: np.ndarray  # int64 [n]
    fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per kept field: (user row, position, raw id)
    bad: list[tuple[int, str]]  # (file line, reason) of malformed lines
    blank: int


class UserFeatureParser:
    """Parses `userFeature.data` blocks into each user's raw ids per kept field.

    `parse` is pure (threads may run it on several blocks at once); `chunks` applies the error policy to
    the parsed blocks in file order.
    """

    def __init__(
        self,
        path: str,
        single: list[str],
        lists: list[str],
        known_fields: set[str],
        problems: Problems,
    ) -> None:
        self.path = path
        self.single = single
        self.lists = lists
        self.known = known_fields | {"uid"} | set(single) | set(lists)
        self.problems = problems
        used = ["uid", *single, *lists]
        # uid first, then the fields we keep, then known fields we ignore
        self._names = pa.array(used + sorted(self.known - set(used)))
        self._kept = 1 + len(single) + len(lists)  # names 0 .. _kept - 1: uid, then the kept fields

    def parse(self, block: LineBlock) -> ParsedBlock:
        lines = block.lines
        numbers = np.arange(block.first_line, block.first_line + len(lines))
        blank = pc.equal(pc.utf8_length(lines), 0).to_numpy(zero_copy_only=False)
        shaped = pc.match_substring_regex(lines, _LINE_SHAPE).to_numpy(zero_copy_only=False)
        if block.truncated_last and len(lines):
            shaped[-1] = False
        good = lines.filter(pa.array(shaped)) if not shaped.all() else lines
        split = pc.split_pattern(pc.replace_substring(good, "|", " "), " ")
        text, token_line = pc.list_flatten(split), pc.list_parent_indices(split).to_numpy()
        is_name = ~pc.ascii_is_decimal(text).to_numpy(zero_copy_only=False)
        codes = pc.index_in(text.filter(pa.array(is_name)), value_set=self._names).fill_null(-1)
        codes = codes.to_numpy(zero_copy_only=False)
        field_of = np.cumsum(is_name) - 1  # each token's field (every good line starts with a name)
        values_per_field = np.bincount(field_of[~is_name], minlength=len(codes))
        field_bad = self._field_errors(codes, token_line[is_name], values_per_field, len(good))
        bad = ~shaped & ~blank
        bad[np.flatnonzero(shaped)[field_bad]] = True
        reasons = [
            (int(numbers[i]), self.explain(lines[int(i)].as_py(), block.truncated_last and i == len(lines) - 1))
            for i in np.flatnonzero(bad)
        ]
        # keep the values of kept fields on good lines, with their position inside their field's list
        is_value = ~is_name
        value_field = field_of[is_value]
        code = codes[value_field]
        position = np.flatnonzero(is_value) - np.flatnonzero(is_name)[value_field] - 1
        keep = (code >= 0) & (code < self._kept)
        row = token_line[is_value]
        keep &= ~field_bad[row]
        values = pc.cast(text.filter(pa.array(is_value)).filter(pa.array(keep)), pa.int64()).to_numpy()
        code, position = code[keep], position[keep]
        # renumber good lines into user rows
        user_row = np.cumsum(~field_bad) - 1
        row = user_row[row[keep]]
        fields = [(row[code == k], position[code == k], values[code == k]) for k in range(self._kept)]
        uid = np.zeros(int((~field_bad).sum()), dtype=np.int64)
        uid[fields[0][0]] = fields[0][2]
        return ParsedBlock(numbers[shaped][~field_bad], uid, fields[1:], reasons, int(blank.sum()))

    def _field_errors(self, codes: np.ndarray, name_lines: np.ndarray, values_per_field: np.ndarray, n: int
                      ) -> np.ndarray:
        """Lines with an unknown field, a repeated field, a multi-valued single field or no uid."""
        bad = np.zeros(n, dtype=bool)
        bad[name_lines[codes < 0]] = True
        used = codes >= 0
        k = len(self._names)
        counts = np.bincount(name_lines[used] * k + codes[used], minlength=n * k).reshape(n, k)
        bad |= counts[:, 0] != 1  # uid is name 0
        bad |= (counts[:, 1 : self._kept] > 1).any(1)
        single = (codes >= 0) & (codes <= len(self.single))  # uid and the single fields
        bad[name_lines[single & (values_per_field != 1)]] = True
        return bad

    def report(self, parsed: ParsedBlock) -> ParsedBlock:
        """Apply the error policy to a block's bad lines; call on blocks in file order."""
        for line, reason in parsed.bad:
            self.problems.report("malformed_lines", f"{self.path} line {line}: {reason}")
        self.problems.skipped["blank_lines"] += parsed.blank
        return parsed

    def chunks(self, blocks: Iterator[LineBlock], threads: int = 2) -> Iterator[ParsedBlock]:
        """Parse blocks on `threads` threads (Arrow and numpy release the GIL), report them in order."""
        with ThreadPoolExecutor(threads) as pool:
            pending: deque[Future[ParsedBlock]] = deque()
            for block in blocks:
                pending.append(pool.submit(self.parse, block))
                if len(pending) > threads:  # bounded read-ahead: memory stays a few blocks
                    yield self.report(pending.popleft().result())
            while pending:
                yield self.report(pending.popleft().result())

    def explain(self, line: str, maybe_truncated: bool) -> str:
        """Why one line is bad, in words (only ever run on lines already flagged)."""
        seen: set[str] = set()
        for part in line.split("|"):
            name, _, rest = part.partition(" ")
            if not re.fullmatch(_NAME, name):
                return f"malformed field {quote(part, 40)}"
            if name not in self.known:
                return f"unknown field name {quote(name, 40)}" + (" (truncated last line?)" if maybe_truncated else "")
            ids = rest.split(" ") if rest else []
            if not ids or "" in ids:
                return f"empty field {name!r}"
            bad_id = next((v for v in ids if not re.fullmatch(r"[0-9]{1,18}", v)), None)
            if bad_id is not None:
                return f"field {name!r} has a non-integer id {quote(bad_id, 20)}"
            if name in seen and (name == "uid" or name in self.single or name in self.lists):
                return f"field {name!r} appears twice"
            if (name == "uid" or name in self.single) and len(ids) > 1:
                return f"single-valued field {name!r} has {len(ids)} values"
            seen.add(name)
        if "uid" not in seen:
            return "no uid field"
        if maybe_truncated:
            return "last line has no newline: the file looks truncated"
        return "malformed line"


# ---- the CSV files --------------------------------------------------------------------------

_ROW_SHAPE = r"^[0-9]{1,18},[0-9]{1,18},(-1|0|1)$"


@dataclass
class LabelRows:
    line: np.ndarray  # int64
    aid: np.ndarray  # int64
    uid: np.ndarray  # int64
    label: np.ndarray  # int8, 0 or 1


def parse_label_rows(path: str, stream: BinaryIO, header: bool, problems: Problems) -> Iterator[LabelRows]:
    """`aid,uid,label` rows (label 1 positive; -1 or 0 negative), block by block."""
    empty = True
    for block in line_blocks(stream):
        empty = False
        lines = block.lines
        numbers = np.arange(block.first_line, block.first_line + len(lines))
        if header and block.first_line == 1 and len(lines):
            if lines[0].as_py().replace(" ", "") != "aid,uid,label":
                got = quote(lines[0].as_py(), 60)
                raise InputError(f"{path} line 1: expected the header 'aid,uid,label', got {got}")
            lines, numbers = lines.slice(1), numbers[1:]
        blank = pc.equal(pc.utf8_length(lines), 0).to_numpy(zero_copy_only=False)
        ok = pc.match_substring_regex(lines, _ROW_SHAPE).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(~ok & ~blank):
            text = lines[int(i)].as_py()
            problems.report("malformed_rows", f"{path} line {numbers[i]}: expected 'aid,uid,label' "
                            f"with integer ids and label 1/-1, got {quote(text, 60)}")
        problems.skipped["blank_lines"] += int(blank.sum())
        if not ok.all():
            lines, numbers = lines.filter(pa.array(ok)), numbers[ok]
        cells = pc.list_flatten(pc.split_pattern(lines, ","))
        values = pc.cast(cells, pa.int64()).to_numpy().reshape(-1, 3)
        yield LabelRows(numbers, values[:, 0], values[:, 1], (values[:, 2] == 1).astype(np.int8))
    if empty:
        raise InputError(f"{path} is empty: expected " + ("the header 'aid,uid,label' and " if header else "") +
                         "rows 'aid,uid,label'")


def parse_ad_features(path: str, text: str, fields: list[str]) -> pd.DataFrame:
    """`adFeature.csv`: one row per ad (aid) with integer ad fields; small, read whole."""
    lines = text.splitlines()
    if not lines:
        raise InputError(f"{path} is empty: expected a header with aid,{','.join(fields)}")
    header = [h.strip() for h in lines[0].split(",")]
    missing = [c for c in ["aid", *fields] if c not in header]
    if missing:
        raise InputError(f"{path} line 1: missing column(s) {', '.join(missing)} (header: {quote(lines[0], 80)})")
    columns = [header.index(c) for c in ["aid", *fields]]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != len(header):
            raise InputError(f"{path} line {number}: {len(cells)} columns, the header has {len(header)}")
        try:
            rows.append([int(cells[c]) for c in columns])
        except ValueError:
            raise InputError(f"{path} line {number}: a non-integer value in {quote(line, 80)}") from None
        if rows[-1][0] < 0:  # train.csv's aids are non-negative: it could never name this ad
            raise InputError(f"{path} line {number}: aid {rows[-1][0]} is negative")
    return pd.DataFrame(rows, columns=["aid", *fields], dtype=np.int64)
