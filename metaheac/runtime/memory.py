"""Memory estimates checked before allocating: a vocabulary of 1e9 or 1e10 users is refused with the
figure, rather than failing deep inside torch or numpy (or being killed by the kernel)."""

from __future__ import annotations

import os

from metaheac.data.errors import InputError
from metaheac.data.schema import DatasetSchema

# Per table row: the weights, and in training the gradient rows and Adam's two moments.
_TABLE_COPIES = 4
# `generate` holds every user's fields and mix while writing (measured: about 1.9 KB a user at 20k-80k
# users) and every labelled row with its probability and indexes.
GENERATE_BYTES_PER_USER = 2048
GENERATE_BYTES_PER_ROW = 200


def table_bytes(schema: DatasetSchema, embedding_dim: int, bytes_per_value: int = 4) -> int:
    """The embedding tables of one network of this schema, times the copies training keeps."""
    rows = sum(f.vocab_size for f in [*schema.user_single, *schema.user_lists, *schema.campaign_fields])
    return rows * embedding_dim * bytes_per_value * _TABLE_COPIES


def available_bytes(device: str = "cpu") -> int:
    """Free memory of the device: CUDA's free memory, else the host's MemAvailable."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(what: str, needed: int, device: str = "cpu") -> None:
    """Refuse, in one line with both figures, work that needs more memory than the device has free."""
    free = available_bytes(device)
    if needed > free:
        raise InputError(f"{what} needs about {_gb(needed)} of memory and {device} has {_gb(free)} free")


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
