"""Process-group helpers shared by the trainer and the commands that train (`langmoe train`, `pretrain`).

Why this exists: Accelerate sets up gloo (CPU) data parallelism only when it is told `cpu=True`; without it a
`torchrun` / `accelerate launch --multi_gpu` job on a machine without a GPU silently runs N unsynchronised
single-process trainings. Everything here asks Accelerate's shared `PartialState` (created once, with `cpu=True`
when no accelerator exists), so the trainer's `Accelerator` and the commands agree on rank and world size.
Only the main process writes outputs; the others wait at `barrier()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from langmoe.errors import LangmoeError

__all__ = [
    "barrier",
    "check_launch",
    "dist_state",
    "is_main_process",
    "allow_fsdp_on_cpu",
    "gathered_model",
    "main_process_first",
    "no_accelerator",
    "only_main_process",
    "world_size",
]

ACCELERATE_CPU_HINT = (
    "use `accelerate launch --multi_gpu --num_processes N -m langmoe ...` or "
    "`torchrun --nproc_per_node N -m langmoe ...` (both give gloo DDP on a CPU-only machine)"
)


def no_accelerator() -> bool:
    """True when torch sees no GPU (or other accelerator): then Accelerate must be told `cpu=True`."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return not acc.is_available()
    return not torch.cuda.is_available()


def check_launch() -> None:
    """Refuse `accelerate launch --cpu --num_processes N` (N > 1): Accelerate starts ONE process for it.

    Accelerate's simple launcher (used for `--cpu`) runs multi-CPU jobs only through mpirun; without a host file it
    starts a single process and still exports MASTER_ADDR, which a real torchrun / mpirun job accompanies with
    WORLD_SIZE. Training that one process as if it were the job would silently give a different run.
    """
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        and os.environ.get("MASTER_ADDR")
        and not any(os.environ.get(k) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    ):
        raise LangmoeError(
            "`accelerate launch --cpu --num_processes N` starts only one process (Accelerate runs multi-CPU "
            f"jobs through mpirun); {ACCELERATE_CPU_HINT}"
        )


def dist_state():
    """Accelerate's shared `PartialState`, created on first use (this joins the process group when launched)."""
    from accelerate import PartialState

    check_launch()
    if PartialState._shared_state:
        return PartialState()
    try:
        return PartialState(cpu=no_accelerator())
    except (ValueError, RuntimeError) as e:
        raise LangmoeError(f"cannot join the process group: {str(e).splitlines()[0]}") from e


def world_size() -> int:
    return dist_state().num_processes


def is_main_process() -> bool:
    return dist_state().is_main_process


def barrier() -> None:
    """All processes wait here (no-op for a single process)."""
    _wait(dist_state())


def _wait(state) -> None:
    """`wait_for_everyone`, where a peer that died (e.g. the main process stopped on a bad input) becomes one line
    instead of a gloo traceback labelled as a bug."""
    if state.num_processes <= 1:
        return
    try:
        state.wait_for_everyone()
    except RuntimeError as e:
        raise LangmoeError(
            f"process {state.process_index}: another process of this run stopped (see its error above); "
            f"stopping too ({' '.join(str(e).split())[:120]})"
        ) from e


@contextmanager
def main_process_first() -> Iterator[bool]:
    """Run the body on the main process first (e.g. build a cache), then on the others; yields is_main."""
    state = dist_state()
    if state.num_processes == 1:
        yield True
        return
    main = state.is_main_process
    if not main:
        _wait(state)
    yield main
    if main:
        _wait(state)


@contextmanager
def only_main_process() -> Iterator[bool]:
    """Yields is_main; every process waits at the end of the block (also when the main process raised), so the
    others do not exit (and end the job) before the main process has written its outputs."""
    state = dist_state()
    try:
        yield state.is_main_process
    finally:
        _wait(state)


def allow_fsdp_on_cpu() -> None:
    """Let Accelerate honour an FSDP config (`accelerate launch --config_file fsdp.yaml`) on a CPU-only machine.

    Accelerate enables FSDP only for GPU-like process groups; for gloo (MULTI_CPU) it silently falls back to plain
    DDP. torch's FSDP2 (`fully_shard`) does work over gloo on CPU, so when FSDP is requested and the process group
    is a multi-CPU one we present it as multi-device before the AcceleratorState is built (the device stays CPU).
    This touches Accelerate's shared state: it is checked against accelerate 1.15 by tests/train/test_fsdp.py.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if AcceleratorState._shared_state:
        return  # already built: nothing to adjust
    state = dist_state()
    if state.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU


def gathered_model(model, state_dict, rebuild):
    """A plain (unsharded) model holding the trained weights, for saving and evaluating on the main process.

    `state_dict`: `TrainResult.state_dict` (None when the model was not sharded: `model` is returned as is; empty on
    the non-main processes of a sharded run: None is returned);
    `rebuild()`: a fresh model of the same structure (e.g. the loader that built `model`), loaded strictly except
    for weights tied to another (lm_head tied to the embeddings).
    """
    if state_dict is None:
        return model
    if not state_dict:
        return None  # a non-main process of a sharded run: the weights were gathered on the main process only
    plain = rebuild()
    missing, unexpected = plain.load_state_dict(state_dict, strict=False)
    tied = set()
    seen: dict[int, str] = {}
    for name, t in plain.state_dict(keep_vars=True).items():
        if t.data_ptr() in seen:
            tied.add(name)
        seen.setdefault(t.data_ptr(), name)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise LangmoeError(
            f"the gathered weights do not fit the rebuilt model (missing {missing[:3]}, unexpected "
            f"{list(unexpected)[:3]}): report this with the accelerate config used"
        )
    if tied and hasattr(plain, "tie_weights"):
        plain.tie_weights()
    plain.eval()
    return plain
