"""Trainer overhead: tokens/s of `langmoe.train.trainer.train` vs a bare PyTorch loop on the same model and batches.

Both do forward (use_cache off), backward, AdamW step and zero_grad on identical batches from the same initial
weights; the trainer adds Accelerate, the LR scheduler, loss bookkeeping and logging. Repeats are interleaved
(bare, trainer, bare, ...) so load from other processes hits both alike; medians are reported.

On a shared machine wall-clock tokens/s swings by +-30% with other people's load, so the primary figure is
tokens per CPU-second of this process (`time.process_time`, 1 torch thread), which such load barely moves;
wall-clock figures are printed too. The trainer's CPU time includes its whole call (Accelerator, TensorBoard
writer, final log), the bare loop's only its steps.

    python benchmarks/trainer_overhead.py --threads 1 --steps 8 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.train.trainer import TrainConfig, train


class ListSource:
    """Serves precomputed batches: the source costs nothing and is identical for both loops."""

    def __init__(self, batches):
        self.batches = batches

    def get(self, step, micro, rank=0, world=1):
        return self.batches[step]


def bare_loop(model, batches, lr: float) -> tuple[float, float]:
    """(wall tokens/s, tokens per CPU-second) of a plain loop."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    model.train()
    tokens = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for b in batches:
        out = model(input_ids=b["input_ids"], labels=b["labels"], use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += b["input_ids"].numel()
    last = out.loss.item()  # one sync at the end, as the trainer's final log does
    assert last == last
    return tokens / (time.perf_counter() - t0), tokens / (time.process_time() - c0)


def trainer_run(model, batches, cfg: TrainConfig) -> tuple[float, float]:
    """(wall tokens/s of the loop as train() reports it, tokens per CPU-second of the whole call)."""
    with tempfile.TemporaryDirectory() as d:
        c0 = time.process_time()
        res = train(model, ListSource(batches), cfg, d)
        cpu = time.process_time() - c0
    return res.tokens_per_s, res.tokens_seen / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=a.hidden,
            intermediate_size=4 * a.hidden,
            num_hidden_layers=a.layers,
            num_attention_heads=max(1, a.hidden // 32),
            num_key_value_heads=max(1, a.hidden // 64),
            vocab_size=a.vocab,
            max_position_embeddings=a.seq,
        )
    )
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(a.steps):
        ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
        batches.append(
            {"input_ids": ids, "labels": ids.clone(), "lang_ids": ids * 0, "group_ids": ids * 0 - 1}
        )
    common = dict(steps=a.steps, lr=1e-3, micro_batch_size=a.batch, progress=False, save_every=0)
    quiet = TrainConfig(**common, grad_clip=0.0, log_every=0)  # the bare loop's work; one log row at the end
    full = TrainConfig(**common, grad_clip=1.0, log_every=1)  # plus clipping and a log row every step

    # Warm up kernels, the allocator and the one-time imports (TensorBoard, Accelerate) before measuring.
    bare_loop(copy.deepcopy(base), batches[:2], 1e-3)
    trainer_run(copy.deepcopy(base), batches[:2], quiet.model_copy(update={"steps": 2}))
    runs = {
        "bare loop": lambda m: bare_loop(m, batches, 1e-3),
        "train() quiet": lambda m: trainer_run(m, batches, quiet),
        "train() clip+log/step": lambda m: trainer_run(m, batches, full),
    }
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(a.repeats):
        for name, fn in runs.items():
            w, c = fn(copy.deepcopy(base))
            wall[name].append(w)
            cpu[name].append(c)
        print(f"repeat {r}: " + "; ".join(f"{k} {wall[k][-1]:,.0f} wall {cpu[k][-1]:,.0f} cpu" for k in runs))
    mw = {k: statistics.median(v) for k, v in wall.items()}
    mc = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"model hidden={a.hidden} layers={a.layers} vocab={a.vocab} seq={a.seq} batch={a.batch} "
        f"threads={a.threads} steps={a.steps} repeats={a.repeats}  (medians)"
    )
    print(f"{'':22s}  tokens/CPU-s  ratio | wall tokens/s  ratio")
    for k in runs:
        print(
            f"{k:22s}  {mc[k]:12,.0f}  {mc[k] / mc['bare loop']:.3f} | {mw[k]:13,.0f}  {mw[k] / mw['bare loop']:.3f}"
        )


if __name__ == "__main__":
    main()
