"""A dataset's users, read by Parquet row group: a shard is a contiguous block of row groups and never loads
the rest; `take` streams the groups holding a few chosen users (the seeds), and keeps the shard's own groups
decoded for scoring when asked (`keep`), so a user base of 10M users is scored in bounded memory."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from metaheac.data.dataset import SCHEMA_FILE, USERS_FILE, fetch
from metaheac.data.loading import user_table
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import UserTable


class UserBase:
    """A dataset's users, read by Parquet row group (row i of the file is user index i)."""

    def __init__(self, dataset_uri: str) -> None:
        folder = fetch(dataset_uri, [SCHEMA_FILE, USERS_FILE])
        self.schema = DatasetSchema.from_json((folder / SCHEMA_FILE).read_text(), source=dataset_uri)
        self.path: Path = folder / USERS_FILE
        self.file = pq.ParquetFile(self.path)
        self._local = threading.local()  # a ParquetFile per thread: one is not safe to read from two at once
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # group g: [starts[g], starts[g+1])
        self._single = [f.name for f in self.schema.user_single]
        self._lists = [f.name for f in self.schema.user_lists]
        self._keep: range = range(0)
        self._kept: dict[int, UserTable] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def shard_groups(self, shard: int, shards: int) -> range:
        """Shard `shard` of `shards`: a contiguous block of row groups (as even as the groups allow)."""
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
        groups = self.file.num_row_groups
        return range(shard * groups // shards, (shard + 1) * groups // shards)

    def uids(self) -> np.ndarray:
        """Every user's raw uid (one int64 column: 80 MB at 10M users)."""
        return pq.read_table(self.path, columns=["uid"]).column("uid").to_numpy()

    def keep(self, groups: range) -> None:
        """Keep these row groups decoded from their first read (a `take`) until `batches` yields them: a
        shard's users are then decoded once, by its seeds' take, not again to be scored. Memory: about
        230 bytes a kept user at the Tencent sizes (2.3 GB for a shard of 10M)."""
        self._keep = groups

    def group(self, g: int, rows: np.ndarray | None = None) -> UserTable:
        """Row group g as tensors (only `rows`, positions within the group, when given)."""
        kept = self._kept.get(g)
        if kept is None and g in self._keep:
            kept = self._kept[g] = self._decode(g)
        if kept is None:
            return self._decode(g, rows)
        if rows is None:
            return kept
        picked = torch.from_numpy(rows)
        return UserTable(kept.uid[rows], kept.single[picked], kept.lists[picked])

    def _decode(self, g: int, rows: np.ndarray | None = None) -> UserTable:
        if not hasattr(self._local, "file"):
            self._local.file = pq.ParquetFile(self.path, memory_map=True)
        # one thread per group: groups are decoded in parallel (`take`) or beside scoring's threads, and
        # Arrow's own pool on top of them spent more time in the kernel than decoding
        table = self._local.file.read_row_group(g, columns=["uid", *self._single, *self._lists], use_threads=False)
        return user_table(table if rows is None else table.take(rows), self.schema)

    def batches(self, groups: range) -> Iterator[tuple[int, UserTable]]:
        """(index of the first user, its row group's users) for each group, one group in memory at a time
        (but those kept)."""
        for g in groups:
            kept = self._kept.pop(g, None)
            yield int(self.starts[g]), self._decode(g) if kept is None else kept

    def take(self, indexes: np.ndarray) -> UserTable:
        """The users at sorted, distinct `indexes` (at least one), reading only the row groups that hold them,
        on torch's thread count of threads (Arrow and NumPy release the GIL: seeds spread over a 10M-user
        base touch every row group)."""
        group_of = np.searchsorted(self.starts, indexes, side="right") - 1

        def part(g: int) -> UserTable:
            return self.group(g, indexes[group_of == g] - self.starts[g])

        with ThreadPoolExecutor(torch.get_num_threads()) as pool:
            parts = list(pool.map(part, np.unique(group_of).tolist()))
        return UserTable(
            np.concatenate([p.uid for p in parts]),
            torch.cat([p.single for p in parts]),
            torch.cat([p.lists for p in parts]),
        )
