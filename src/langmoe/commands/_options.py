"""Options several commands share, added with one call each, and the scope the CLI runs such a command in.

`add_precision_options(parser, record=...)` gives a training command `--dtype`, `--mixed-precision`,
`--gradient-checkpointing` and `--attn-implementation` (see `langmoe.precision`). While the command runs they
are the active `Precision`; when it succeeds, the settings and its peak memory (`langmoe.memory`) go into its JSON
record (`record`: a file name under `--out`, or a function of the arguments) and the peak is its last line.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RecordPath = str | Callable[[argparse.Namespace], Path | None] | None
_RECORD = "_langmoe_record"


def add_precision_options(parser: argparse.ArgumentParser, record: RecordPath = None) -> None:
    """The precision and memory options of a training command; `record` names its JSON (peak memory goes there)."""
    g = parser.add_argument_group("precision and memory")
    g.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="dtype of the weights while training (default float32; bfloat16 halves weights, gradients "
                        "and optimizer state but rounds away small updates)")
    g.add_argument("--mixed-precision", choices=["no", "bf16"], default=None,
                   help="bf16 autocast over the weights (default: no, or the recipe's)")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in backward: less memory, ~30%% more compute, same result")
    g.add_argument("--attn-implementation", choices=["sdpa", "eager"], default=None,
                   help="attention kernel (default: the model's, SDPA in transformers)")
    parser.set_defaults(**{_RECORD: record if record is not None else ""})


def precision_from_args(args: argparse.Namespace):
    """The `Precision` the options ask for (validated once here)."""
    from langmoe.precision import Precision

    return Precision(dtype=args.dtype, mixed_precision=args.mixed_precision,
                     gradient_checkpointing=args.gradient_checkpointing,
                     attn_implementation=args.attn_implementation)


def _record_path(args: argparse.Namespace) -> Path | None:
    record = getattr(args, _RECORD)
    if callable(record):
        return record(args)
    if record and getattr(args, "out", None):
        return Path(args.out) / record
    return None


@contextmanager
def command_scope(args: argparse.Namespace) -> Iterator[None]:
    """Run a command with its precision settings active; on success store and print its peak memory.

    Commands without the precision options run unchanged."""
    if not hasattr(args, _RECORD):
        yield
        return
    from langmoe.memory import peak_memory, peak_memory_line, reset_cuda_peak
    from langmoe.precision import use_precision

    reset_cuda_peak()
    precision = precision_from_args(args)
    with use_precision(precision):
        yield
    if os.environ.get("RANK", "0") != "0":  # launched on several processes: the main one reports
        return
    peak = peak_memory()
    path = _record_path(args)
    if path is not None and path.is_file():
        from langmoe.io import read_json, write_json

        record = read_json(path)
        if isinstance(record, dict):
            write_json(path, {**record, "precision": precision.model_dump(), "peak_memory": peak})
    print(peak_memory_line(peak), flush=True)
