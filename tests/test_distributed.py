"""Data-parallel meta-training: 2 gloo ranks with T tasks each step as 1 process with 2T tasks."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metaheac.training.meta import CHECKPOINT_FILE, meta_train
from tests.tiny_meta import config, data, model

RANKS, TASKS, STEPS = 2, 2, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, folder: str) -> None:
    """One rank: meta-train float64 models whose init differs by rank (the broadcast must undo that),
    interrupted halfway, then resumed from rank 0's checkpoint."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=RANKS)
    try:
        features, rows = data()
        uri = f"{folder}/checkpoint"
        meta_train(model(seed=rank), features, rows, config(task_count=TASKS, max_steps=STEPS // 2), uri,
                   progress=False)
        net = model(seed=10 + rank)  # as a fresh process would: the checkpoint must bring everything back
        result = meta_train(net, features, rows, config(task_count=TASKS, max_steps=STEPS), uri, resume=True,
                            progress=False)
        torch.save({"state": net.state_dict(), "losses": result.losses}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_step_as_one_process_with_all_their_tasks(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=RANKS)
    features, rows = data()
    single = model(seed=0)
    expected = meta_train(single, features, rows, config(task_count=RANKS * TASKS, max_steps=STEPS), progress=False)
    for rank in range(RANKS):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["losses"], expected.losses, rtol=1e-10, atol=1e-12)
        assert got["state"].keys() == single.state_dict().keys()
        for name, value in single.state_dict().items():
            torch.testing.assert_close(got["state"][name], value, rtol=1e-9, atol=1e-11, msg=name)
    checkpoint = torch.load(tmp_path / "checkpoint" / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["step"] == STEPS and checkpoint["world_size"] == RANKS
