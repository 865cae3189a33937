"""The seed-set folder the expansion pipeline reads: one seed set per campaign, as two files.

    <folder>/<campaign>.json    the manifest: {"aid": <an existing campaign's raw ad id>}
                                           or {"ad_fields": {"advertiserId": <raw value>, ...}} for a new one
                                (raw values, mapped through the dataset's campaign_vocab.json; a field
                                left out or unseen is unknown); optional "negatives": the name of a
                                uids file in the same folder (no path) holding known non-converting users
    <folder>/<campaign>.txt     the seed users: one integer uid a line (a `uid` header line is allowed)
        or <campaign>.parquet   or Parquet with a `uid` column

`<campaign>` (the file name without its extension) names the campaign and its audience. Every manifest is
a campaign; a seed set whose files are missing or malformed fails that campaign alone, with one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaheac import storage
from metaheac.data.errors import InputError, quote

MANIFEST = ".json"
UID_FORMATS = (".txt", ".parquet")


class SeedSetError(InputError):
    """A seed set that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class SeedSet:
    campaign: str
    manifest: str  # its URI

    def campaign_fields(self) -> dict:
        """{"aid": ...} or the raw ad fields, from the manifest."""
        manifest = self._manifest()
        if ("aid" in manifest) == ("ad_fields" in manifest):
            raise SeedSetError(f"{self.manifest}: give exactly one of \"aid\" and \"ad_fields\"")
        if "aid" in manifest:
            return {"aid": _integer(manifest["aid"], self.manifest, "aid")}
        fields = manifest["ad_fields"]
        if not isinstance(fields, dict) or not fields:
            raise SeedSetError(f"{self.manifest}: \"ad_fields\" must be an object of field: raw value")
        return {str(k): _integer(v, self.manifest, k) for k, v in fields.items()}

    def seed_uids(self) -> np.ndarray:
        for ext in UID_FORMATS:
            uri = self.manifest[: -len(MANIFEST)] + ext
            if storage.exists(uri):
                return read_uids(uri)
        names = " or ".join(self.campaign + ext for ext in UID_FORMATS)
        raise SeedSetError(f"{self.manifest}: no seed file beside it ({names})")

    def negative_uids(self) -> np.ndarray | None:
        name = self._manifest().get("negatives")
        if not name:
            return None
        if not isinstance(name, str) or "/" in name or "\\" in name or name in (".", ".."):
            raise SeedSetError(f"{self.manifest}: \"negatives\" must name a file beside it (no path), got {name!r:.80}")
        return read_uids(storage.join(self.manifest.rsplit("/", 1)[0], name))

    def _manifest(self) -> dict:
        try:
            manifest = json.loads(storage.read_text(self.manifest))
        except json.JSONDecodeError as error:
            raise SeedSetError(f"{self.manifest}: not JSON ({error})") from None
        if not isinstance(manifest, dict):
            raise SeedSetError(f"{self.manifest}: expected a JSON object")
        return manifest


def _integer(value: object, uri: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise SeedSetError(f"{uri}: {name} must be an integer, got {value!r}")
    return int(value)


def read_uids(uri: str) -> np.ndarray:
    """uids from a Parquet file (column `uid`) or a text file with one uid a line."""
    if uri.endswith(".parquet"):
        try:
            with storage.open_read(uri) as stream:
                table = pq.read_table(stream)
        except pa.ArrowException as error:
            raise SeedSetError(f"{uri}: not a readable Parquet file ({quote(str(error), 120)})") from None
        if "uid" not in table.column_names:
            raise SeedSetError(f"{uri}: no `uid` column (columns: {quote(', '.join(table.column_names))})")
        column, kind = table.column("uid"), table.schema.field("uid").type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):  # uids written as text: digits are fine
            try:
                column = pc.cast(pc.utf8_trim_whitespace(column), pa.int64())
            except pa.ArrowInvalid:
                bad = next(v for v in column.to_pylist() if v is None or not v.strip().isdigit())
                raise SeedSetError(f"{uri}: column `uid` holds text that is not an integer uid, e.g. "
                                   f"{quote(str(bad), 60)}") from None
        elif not pa.types.is_integer(kind):
            raise SeedSetError(f"{uri}: column `uid` is {kind}, expected integer uids")
        return column.to_numpy().astype(np.int64)
    data = storage.read_bytes(uri)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        byte = data[error.start]
        raise SeedSetError(f"{uri}: not text (byte {error.start} is {byte:#04x}): one uid a line") from None
    uids = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line == "uid":
            continue
        if not re.fullmatch(r"[0-9]{1,19}", line) or int(line) >= 2**63:
            raise SeedSetError(f"{uri} line {number}: expected one integer uid below 2**63, got {quote(line, 60)}")
        uids.append(int(line))
    return np.array(uids, dtype=np.int64)


def list_seed_sets(folder: str) -> list[SeedSet]:
    """Every seed set (manifest) of the folder, by campaign name."""
    manifests = [uri for uri in storage.list_files(folder) if uri.endswith(MANIFEST) and "/" not in
                 uri[len(storage.normalize(folder)) + 1 :]]
    if not manifests:
        what = "no such folder" if not storage.exists(folder) else "no seed set (<campaign>.json) in it"
        raise SeedSetError(f"--seeds {storage.normalize(folder)}: {what}")
    return [SeedSet(uri.rsplit("/", 1)[-1][: -len(MANIFEST)], uri) for uri in manifests]
