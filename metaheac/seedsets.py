"""The seed-set folder the expansion pipeline reads: one seed set per campaign, as two files.

    <folder>/<campaign>.json    the manifest: {"aid": <an existing campaign's raw ad id>}
                                           or {"ad_fields": {"advertiserId": <raw value>, ...}} for a new one
                                (raw values, mapped through the dataset's campaign_vocab.json; a field
                                left out or unseen is unknown); optional "negatives": a uids file of the
                                folder holding known non-converting users
    <folder>/<campaign>.txt     the seed users: one integer uid a line (a `uid` header line is allowed)
        or <campaign>.parquet   or Parquet with a `uid` column

`<campaign>` (the file name without its extension) names the campaign and its audience. Every manifest is
a campaign; a seed set whose files are missing or malformed fails that campaign alone, with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from metaheac import storage

MANIFEST = ".json"
UID_FORMATS = (".txt", ".parquet")


class SeedSetError(ValueError):
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
        return read_uids(storage.join(self.manifest.rsplit("/", 1)[0], str(name))) if name else None

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
        with storage.open_read(uri) as stream:
            table = pq.read_table(stream)
        if "uid" not in table.column_names:
            raise SeedSetError(f"{uri}: no `uid` column (columns: {', '.join(table.column_names)})")
        return table.column("uid").to_numpy().astype(np.int64)
    numbered = enumerate(storage.read_text(uri).splitlines(), 1)
    lines = [(n, line.strip()) for n, line in numbered if line.strip() and line.strip() != "uid"]
    for n, line in lines:
        if not line.lstrip("-").isdigit():
            raise SeedSetError(f"{uri}:{n}: every line must be one integer uid, got {line[:40]!r}")
    return np.array([int(line) for _, line in lines], dtype=np.int64)


def list_seed_sets(folder: str) -> list[SeedSet]:
    """Every seed set (manifest) of the folder, by campaign name."""
    manifests = [uri for uri in storage.list_files(folder) if uri.endswith(MANIFEST) and "/" not in
                 uri[len(storage.normalize(folder)) + 1 :]]
    return [SeedSet(uri.rsplit("/", 1)[-1][: -len(MANIFEST)], uri) for uri in manifests]
