"""Pretraining throughput: what `langmoe pretrain` gets per CPU-second, against a bare loop and against
`torch.compile` of the same bare loop, for the shipped presets at the shipped bases' settings.

Every loop does forward (use_cache off), backward, AdamW step and zero_grad on the same precomputed packed blocks
(`block_len` tokens each, no padding: `langmoe.data.packing` concatenates documents into full blocks, so every
token is a training token) from the same initial weights. Loops:

- `bare eager`: the reference;
- `bare compiled`: the model wrapped in `torch.compile` (inductor); its compile time is reported separately and
  left out of the rate (it pays back only on long runs);
- `train()`: langmoe's trainer (Accelerate, scheduler, clipping, logging), as `langmoe pretrain` runs it.

Rates are tokens per CPU-second of this process (`time.process_time`, 1 thread by default), medians over
interleaved repeats, so other processes' load barely moves them (see benchmarks/trainer_overhead.py).

    python benchmarks/pretrain_throughput.py --presets tiny tiny-moe --steps 6 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from langmoe.models.presets import create_model
from langmoe.train.trainer import TrainConfig, train


class ListSource:
    """Serves precomputed batches: the source costs nothing and is identical for every loop."""

    def __init__(self, batches):
        self.batches = batches

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1) -> dict:
        return self.batches[step % len(self.batches)]


def bare_loop(model, batches, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.process_time()
    for s in range(steps):
        b = batches[s % len(batches)]
        out = model(input_ids=b["input_ids"], labels=b["labels"], use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.process_time() - t0


def trainer_loop(model, batches, steps: int, micro: int) -> float:
    cfg = TrainConfig(steps=steps, lr=1e-3, micro_batch_size=micro, log_every=0, save_every=0, progress=False,
                      grad_clip=1.0)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.process_time()
        train(model, ListSource(batches), cfg, d)
        return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "tiny-moe"])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--block-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile loop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.randint(0, args.vocab, (args.batch_size, args.block_len), generator=g)
        batches.append({"input_ids": ids, "labels": ids.clone()})
    tokens = args.steps * args.batch_size * args.block_len
    print(f"# pretraining throughput: {args.steps} steps x {args.batch_size} x {args.block_len} tokens, "
          f"{args.threads} thread(s), medians of {args.repeats} interleaved repeats (tokens per CPU-second)\n")
    print("| preset | loop | tokens / CPU-s | vs bare eager | note |")
    print("| --- | --- | ---: | ---: | --- |")
    for preset in args.presets:
        init = create_model(preset, args.vocab, seed=0)
        loops = {"bare eager": lambda m: bare_loop(m, batches, args.steps),
                 "train()": lambda m: trainer_loop(m, batches, args.steps, args.batch_size)}
        notes: dict[str, str] = {}
        compiled = None
        if not args.no_compile:
            compiled = copy.deepcopy(init)
            t0 = time.process_time()
            compiled_fn = torch.compile(compiled)
            bare_loop(compiled_fn, batches, 1)  # compile (forward + backward graphs) once, outside the timing
            notes["bare compiled"] = f"compile {time.process_time() - t0:.0f} CPU-s, excluded"
            loops["bare compiled"] = lambda _m, fn=compiled_fn: bare_loop(fn, batches, args.steps)
        times: dict[str, list[float]] = {k: [] for k in loops}
        for _ in range(args.repeats):
            for name, fn in loops.items():
                times[name].append(fn(copy.deepcopy(init) if name != "bare compiled" else None))
        ref = tokens / statistics.median(times["bare eager"])
        for name in loops:
            rate = tokens / statistics.median(times[name])
            print(f"| {preset} | {name} | {rate:,.0f} | {rate / ref:.3f} | {notes.get(name, '')} |")


if __name__ == "__main__":
    main()
