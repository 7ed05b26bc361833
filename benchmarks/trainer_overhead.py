"""Trainer overhead: tokens/s of `langmoe.train.trainer.train` vs a bare PyTorch loop on the same model and batches.

Both do forward (use_cache off), backward, AdamW step and zero_grad on identical batches from the same initial
weights; the trainer adds Accelerate, the LR scheduler, loss bookkeeping and logging. Repeats are interleaved
(bare, trainer, bare, ...) so load from other processes hits both alike; medians are reported.

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


def bare_loop(model, batches, lr: float) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    model.train()
    tokens = 0
    t0 = time.perf_counter()
    for b in batches:
        out = model(input_ids=b["input_ids"], labels=b["labels"], use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += b["input_ids"].numel()
    last = out.loss.item()  # one sync at the end, as the trainer's final log does
    assert last == last
    return tokens / (time.perf_counter() - t0)


def trainer_run(model, batches, cfg: TrainConfig) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = train(model, ListSource(batches), cfg, d)
        wall = time.perf_counter() - t0
    return res.tokens_per_s, res.tokens_seen / wall


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
    quiet = TrainConfig(
        **common, grad_clip=0.0, log_every=0
    )  # same work as the bare loop; logs the last step
    full = TrainConfig(**common, grad_clip=1.0, log_every=1)  # clipping + a log row every step

    bare_loop(copy.deepcopy(base), batches[:2], 1e-3)  # warm up kernels and the allocator once
    res: dict[str, list[float]] = {"bare": [], "trainer": [], "trainer_wall": [], "trainer_full": []}
    for r in range(a.repeats):
        res["bare"].append(bare_loop(copy.deepcopy(base), batches, 1e-3))
        tps, wall = trainer_run(copy.deepcopy(base), batches, quiet)
        res["trainer"].append(tps)
        res["trainer_wall"].append(wall)
        res["trainer_full"].append(trainer_run(copy.deepcopy(base), batches, full)[0])
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in res.items()), flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"model hidden={a.hidden} layers={a.layers} vocab={a.vocab} seq={a.seq} batch={a.batch} "
        f"threads={a.threads} steps={a.steps} repeats={a.repeats}"
    )
    print(f"bare loop            : {med['bare']:,.0f} tokens/s (median)")
    print(f"train() loop         : {med['trainer']:,.0f} tokens/s  ratio {med['trainer'] / med['bare']:.3f}")
    print(
        f"train() incl. setup  : {med['trainer_wall']:,.0f} tokens/s  ratio {med['trainer_wall'] / med['bare']:.3f}"
    )
    print(
        f"train() clip+log/step: {med['trainer_full']:,.0f} tokens/s  ratio {med['trainer_full'] / med['bare']:.3f}"
    )


if __name__ == "__main__":
    main()
