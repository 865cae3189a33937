"""The users' topic mixes stored with the user base: the recommended method's heads weigh each user's topic
mix, an E-step over the user's ids (`recommended.topics.UserTopics.mixes`) that costs most of a batch's
scoring; it depends on the topic model and the user's ids only, so it is inferred once per (model, users)
and read back by every later campaign and run.

Layout under a folder of ours (`--mixes`; local or gs://), one Parquet file per row group of the user base:
    _METAHEAC                                 our marker ({"step": "user_mixes"}): a foreign folder is refused
    <model digest[:16]>/group-<g>.parquet     column "mix" (float32 [topics]), row i = the group's user i

Each file's metadata records the model's full digest (`UserMixes.digest`) and the sha256 of the group's ids
(`content_digest`) it was inferred from. A file whose model or ids differ (the users table re-preprocessed,
its row groups cut elsewhere) is stale: it is never used, but recomputed with a warning and replaced. A file
is written whole (`storage.open_write`) under `outputs.claim`'s lock on it: shards that score the same row
groups (campaign groups of one user shard) write the same bytes, one at a time; a shard that finds the lock
held scores on and leaves the write to its holder.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from metaheac.data.tensors import UserTable
from metaheac.linear.head import UserMixes
from metaheac.runtime import storage
from metaheac.runtime.outputs import OutputError, claim

log = logging.getLogger(__name__)
STEP = "user_mixes"  # the marker's step: the folder holds user mixes
MIXES_KEY = b"metaheac.user_mixes"  # a mixes file's metadata: {"model", "users", "rows"}


def content_digest(users: UserTable) -> str:
    """sha256 of the users' ids, all a mix depends on beside the model (single and list fields, in order)."""
    digest = hashlib.sha256()
    for ids in (users.single, users.lists):
        digest.update(str(tuple(ids.shape)).encode())
        digest.update(np.ascontiguousarray(ids.numpy(), dtype=np.int32).tobytes())
    return digest.hexdigest()


class StoredMixes:
    """One topic model's mixes of the user base's row groups, in `folder` (module doc)."""

    def __init__(self, folder: str, topics: UserMixes) -> None:
        """`folder`: one `mixes_folder` checked."""
        self.model = topics.digest
        self.folder = storage.join(folder, self.model[:16])
        self.read = self.written = self.stale = 0  # row groups, for the step's summary

    def uri(self, group: int) -> str:
        return storage.join(self.folder, f"group-{group:05d}.parquet")

    def load(self, group: int, users: str, rows: int) -> torch.Tensor | None:
        """The mixes [rows, topics] (float32) of row group `group` whose ids have digest `users`, or None when
        none are stored or the stored ones are stale (then logged: they will be recomputed and replaced)."""
        uri = self.uri(group)
        if not storage.is_file(uri):
            return None
        try:
            with storage.open_read(uri) as f:
                table = pq.read_table(f)
        except pa.ArrowException:
            table = None
        meta = None if table is None else (table.schema.metadata or {}).get(MIXES_KEY)
        if table is None or meta is None:
            raise OutputError(f"{uri}: not a user mixes file written by metaheac (no Parquet with "
                              f"{MIXES_KEY.decode()} metadata); remove it or choose another --mixes folder")
        stored = json.loads(meta)
        if stored != {"model": self.model, "users": users, "rows": rows}:
            why = "the topic model" if stored.get("model") != self.model else "the users' ids"
            log.warning("stored user mixes %s are stale (%s changed): recomputed and replaced", uri, why)
            self.stale += 1
            return None
        mix = table.column("mix").combine_chunks()
        self.read += 1
        return torch.from_numpy(mix.flatten().to_numpy().reshape(rows, mix.type.list_size).copy())

    def save(self, group: int, users: str, mixes: torch.Tensor) -> None:
        """Store row group `group`'s mixes (float32 [rows, topics]) inferred from ids of digest `users`."""
        uri = self.uri(group)
        values = mixes.float().contiguous().numpy()
        column = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
        meta = json.dumps({"model": self.model, "users": users, "rows": len(values)})
        table = pa.table({"mix": column}).replace_schema_metadata({MIXES_KEY: meta.encode()})
        try:
            with claim(uri, STEP, is_file=True, overwrite=True), storage.open_write(uri) as f:
                pq.write_table(table, f)
        except OutputError as error:  # another shard writes the same mixes: its file will do
            log.info("user mixes %s not written here: %s", uri, error)
            return
        self.written += 1


def mixes_folder(folder: str, inputs: list[str] | tuple[str, ...] = ()) -> str:
    """The mixes folder (normalized), after refusing one that is, holds or lies inside an input (a dataset is
    republished whole), one that holds files but not our marker, or another step's marker; a new one is
    marked. One listing decides: a shard that marked the folder meanwhile is seen with its marker."""
    root = storage.normalize(folder)
    for given in inputs:
        source = storage.normalize(given).rstrip("/")
        if root == source or root.startswith(source + "/") or source.startswith(root + "/"):
            raise OutputError(f"--mixes {root}: it is, holds or lies inside the input {source}; choose a folder "
                              "of its own")
    marker = storage.join(root, storage.OWNER_MARKER)
    files = storage.list_files(root)
    if marker in files:
        try:
            step = json.loads(storage.read_text(marker)).get("step")
        except (ValueError, AttributeError):
            step = None
        if step != STEP:
            raise OutputError(f"--mixes {root}: it holds the output of `{step}`, not user mixes; choose another "
                              "folder")
        return root
    if files or storage.is_file(root):
        raise OutputError(f"--mixes {root}: an existing file or folder not written by metaheac; choose an empty or "
                          "new folder")
    storage.write_text(marker, json.dumps({"step": STEP}))  # shards starting together write the same bytes
    return root
