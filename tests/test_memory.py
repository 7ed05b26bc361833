"""`langmoe.memory`: the peak-memory figure is the process's real high-water mark."""

from __future__ import annotations

import resource

import pytest

from langmoe.memory import peak_memory, peak_memory_line


def test_peak_resident_is_positive_and_grows_with_a_big_allocation():
    before = peak_memory()["peak_rss_bytes"]
    assert before > 50e6  # python + torch alone
    block = bytearray(before + 200_000_000)  # a new high-water mark, touched page by page
    block[::4096] = b"x" * len(block[::4096])
    after = peak_memory()
    assert after["peak_rss_bytes"] >= before + 150_000_000
    # the kernel's own two counts of one high-water mark (per-CPU counters: equal to within a few percent)
    assert after["peak_rss_bytes"] == pytest.approx(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rel=0.05)
    assert after["cuda_max_allocated_bytes"] is None  # no GPU in CI
    del block


def test_line_says_resident_and_cuda_when_there():
    assert peak_memory_line({"peak_rss_bytes": 1_750_000_000, "cuda_max_allocated_bytes": None}) == \
        "peak memory: 1.75 GB resident"
    assert peak_memory_line({"peak_rss_bytes": 2e9, "cuda_max_allocated_bytes": 5e8}) == \
        "peak memory: 2.00 GB resident, 0.50 GB CUDA max allocated"


def test_a_spawned_process_measures_its_own_peak_not_its_parents():
    """getrusage's ru_maxrss of a process spawned by a big parent starts at the parent's size; ours does not."""
    import subprocess
    import sys

    block = bytearray(600_000_000)
    block[::4096] = b"x" * len(block[::4096])
    code = "from langmoe.memory import peak_memory; print(peak_memory()['peak_rss_bytes'])"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 500_000_000 < peak_memory()["peak_rss_bytes"]
    del block
