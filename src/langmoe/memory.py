"""Peak memory of this process: the figure every training command prints last and stores in its JSON.

Resident memory is the kernel's high-water mark of the process (Linux `VmHWM`, else `ru_maxrss`: everything,
including the Python interpreter and libraries); on a GPU the CUDA caching allocator's maximum allocated bytes are
added (tensors only). `ru_maxrss` is not used on Linux: a process spawned by a big parent (a benchmark, a test run)
inherits the parent's resident size at exec as its starting maximum.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

__all__ = ["peak_memory", "peak_memory_line", "reset_cuda_peak"]


def _peak_rss_bytes() -> int | None:
    try:  # Linux: this process's own high-water mark (VmHWM starts afresh at exec)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # elsewhere: getrusage (on Linux it would also count the parent's memory when it spawned us)
        import resource
    except ImportError:  # Windows: psutil's peak working set, when installed
        try:
            import psutil

            return int(getattr(psutil.Process().memory_info(), "peak_wset", 0)) or None
        except ImportError:
            return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere


def reset_cuda_peak() -> None:
    """Start CUDA's max-allocated counter afresh (a command measures its own peak)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, Any]:
    """`{"peak_rss_bytes": int | None, "cuda_max_allocated_bytes": int | None}` (None: not measurable here)."""
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = int(max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())))
    return {"peak_rss_bytes": _peak_rss_bytes(), "cuda_max_allocated_bytes": cuda}


def peak_memory_line(peak: dict[str, Any] | None = None) -> str:
    """`peak memory: 1.75 GB resident, 0.80 GB CUDA max allocated` (the CUDA part only on a GPU)."""
    peak = peak or peak_memory()
    parts = []
    if peak.get("peak_rss_bytes"):
        parts.append(f"{peak['peak_rss_bytes'] / 1e9:.2f} GB resident")
    if peak.get("cuda_max_allocated_bytes") is not None:
        parts.append(f"{peak['cuda_max_allocated_bytes'] / 1e9:.2f} GB CUDA max allocated")
    return "peak memory: " + (", ".join(parts) if parts else "not measurable on this platform")
