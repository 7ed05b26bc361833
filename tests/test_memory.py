"""`langmoe.memory`: the peak-memory figure is the process's real high-water mark."""

from __future__ import annotations

import resource

from langmoe.memory import peak_memory, peak_memory_line


def test_peak_resident_is_positive_and_grows_with_a_big_allocation():
    before = peak_memory()["peak_rss_bytes"]
    assert before > 50e6  # python + torch alone
    block = bytearray(before + 200_000_000)  # a new high-water mark, touched page by page
    block[::4096] = b"x" * len(block[::4096])
    after = peak_memory()
    assert after["peak_rss_bytes"] >= before + 150_000_000
    assert after["peak_rss_bytes"] == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert after["cuda_max_allocated_bytes"] is None  # no GPU in CI
    del block


def test_line_says_resident_and_cuda_when_there():
    assert peak_memory_line({"peak_rss_bytes": 1_750_000_000, "cuda_max_allocated_bytes": None}) == \
        "peak memory: 1.75 GB resident"
    assert peak_memory_line({"peak_rss_bytes": 2e9, "cuda_max_allocated_bytes": 5e8}) == \
        "peak memory: 2.00 GB resident, 0.50 GB CUDA max allocated"
