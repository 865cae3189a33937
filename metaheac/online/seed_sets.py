"""The seed-set folder the expansion pipeline reads: one seed set per campaign, as two files.

    <folder>/<campaign>.json    the manifest: {"aid": <an existing campaign's raw ad id>}
                                           or {"ad_fields": {"advertiserId": <raw value>, ...}} for a new one
                                (raw values, mapped through the dataset's campaign_vocab.json; a field
                                left out or unseen is unknown); optional "negatives": the name of a
                                uids file in the same folder (no path) holding known non-converting users;
                                optional "tiers": ["1%", "5%"] or "500,2000" (the run's --tiers otherwise);
                                optional "exclude": names of uid files in the same folder (a Parquet
                                file's column as NAME.parquet#column) kept out of this audience
    <folder>/<campaign>.txt     the seed users: one integer uid a line (a `uid` header line is allowed)
        or <campaign>.parquet   or Parquet with a `uid` column

`<campaign>` (the file name without its extension) names the campaign and its audience. Every manifest is
a campaign; a seed set whose files are missing or malformed fails that campaign alone, with one line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaheac.data.errors import InputError, quote
from metaheac.runtime import storage

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
        return read_uids(self._seed_file())

    def _seed_file(self) -> str:
        for ext in UID_FORMATS:
            uri = self.manifest[: -len(MANIFEST)] + ext
            if storage.exists(uri):
                return uri
        names = " or ".join(self.campaign + ext for ext in UID_FORMATS)
        raise SeedSetError(f"{self.manifest}: no seed file beside it ({names})")

    def negative_uids(self) -> np.ndarray | None:
        name = self._manifest().get("negatives")
        if not name:
            return None
        return read_uids(self._beside(name, "negatives"))

    def tiers(self) -> str | list | None:
        """The campaign's own tiers as written (`tiers.parse_tiers` reads them), or None."""
        tiers = self._manifest().get("tiers")
        if tiers is not None and not isinstance(tiers, str | list):
            raise SeedSetError(f"{self.manifest}: \"tiers\" must be a list like [\"1%\", \"5%\"] or a string")
        return tiers

    def exclusions(self) -> dict[str, np.ndarray]:
        """{file name: uids} of the campaign's exclusion lists, read."""
        names = self._manifest().get("exclude", [])
        if not isinstance(names, list):
            raise SeedSetError(f"{self.manifest}: \"exclude\" must be a list of file names beside it")
        return {name: read_uids(self._beside(name, "exclude")) for name in names}

    def content(self) -> dict:
        """What the campaign's audience depends on in its seed set, by content: the manifest as parsed and the
        sha256 of each file it reads (for `refresh.request_digest`; a file renamed keeps its hash)."""
        manifest = self._manifest()
        names = manifest.get("exclude", [])
        return {"manifest": {k: v for k, v in manifest.items() if k not in ("negatives", "exclude")},
                "seeds": file_digest(self._seed_file()),
                "negatives": file_digest(self._beside(manifest["negatives"], "negatives"))
                if manifest.get("negatives") else None,
                "exclude": sorted(file_digest(self._beside(n, "exclude")) for n in names)
                if isinstance(names, list) else names}

    def _beside(self, name: object, key: str) -> str:
        """The URI of a file the manifest names beside it (no path: a manifest reads only its own folder)."""
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise SeedSetError(f"{self.manifest}: \"{key}\" must name a file beside it (no path), got {name!r:.80}")
        return storage.join(self.manifest.rsplit("/", 1)[0], name)

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
    """uids from a Parquet file (column `uid`, or the one named after "#": crm.parquet#customer_id) or a
    text file with one uid a line; SeedSetError naming the file when it is missing or malformed."""
    uri, column = _column_of(uri)
    if not storage.exists(uri):
        raise SeedSetError(f"{uri}: no such file")
    if uri.endswith(".parquet"):
        return _parquet_uids(uri, column or "uid")
    return _text_uids(uri, storage.read_bytes(uri))


def file_digest(uri: str) -> str:
    """sha256 of a uid file's bytes, as `read_uids` names it (FILE.parquet#COLUMN: the file's and the column's
    name); SeedSetError naming the file when it is missing."""
    path, column = _column_of(uri)
    if not storage.exists(path):
        raise SeedSetError(f"{path}: no such file")
    digest = hashlib.sha256(storage.read_bytes(path))
    digest.update(column.encode())
    return digest.hexdigest()


def _column_of(uri: str) -> tuple[str, str]:
    """(file, column) of crm.parquet#customer_id; (uri, "") without a column."""
    path, _, column = uri.partition("#") if ".parquet#" in uri else (uri, "", "")
    return path, column


def _parquet_uids(uri: str, name: str) -> np.ndarray:
    try:
        with storage.open_read(uri) as stream:
            table = pq.read_table(stream)
    except pa.ArrowException as error:
        raise SeedSetError(f"{uri}: not a readable Parquet file ({quote(str(error), 120)})") from None
    if name not in table.column_names:
        raise SeedSetError(f"{uri}: no `{name}` column (columns: {quote(', '.join(table.column_names))})")
    column, kind = table.column(name), table.schema.field(name).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):  # uids written as text: digits are fine
        try:
            column = pc.cast(pc.utf8_trim_whitespace(column), pa.int64())
        except pa.ArrowInvalid:
            bad = next(v for v in column.to_pylist() if v is None or not v.strip().isdigit())
            raise SeedSetError(f"{uri}: column `{name}` holds text that is not an integer uid, e.g. "
                               f"{quote(str(bad), 60)}") from None
    elif not pa.types.is_integer(kind):
        raise SeedSetError(f"{uri}: column `{name}` is {kind}, expected integer uids")
    return column.to_numpy().astype(np.int64)


def _text_uids(uri: str, data: bytes) -> np.ndarray:
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
