"""metaheac.runtime.cpus: the CPU limit read from cgroup files of both versions, as the kernel writes them."""

from __future__ import annotations

import torch

from metaheac.runtime.cpus import cpu_limit, use_cpu_limit


def test_cgroup_v2_quota_and_no_limit(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(tmp_path) is None


def test_cgroup_v1_quota_and_no_limit(tmp_path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    assert cpu_limit(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_limit(tmp_path) is None


def test_no_cgroup_files_or_garbage_is_no_limit(tmp_path) -> None:
    assert cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("garbage")
    assert cpu_limit(tmp_path) is None


def test_torch_threads_go_down_to_the_limit_never_up(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
        assert use_cpu_limit(tmp_path) == 1
        (tmp_path / "cpu.max").write_text("800000 100000\n")  # 8 CPUs: stays at 1
        assert use_cpu_limit(tmp_path) == 1
    finally:
        torch.set_num_threads(threads)
