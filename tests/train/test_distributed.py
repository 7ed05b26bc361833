"""Two CPU processes (gloo DDP through Accelerate) == one process with twice the micro-batch.

The gradient of DDP is the mean of the per-rank mean losses; with equal token counts per rank that is the gradient
of the one-process mean over the same global batch, so weights after a few AdamW steps must agree.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.train.trainer import TrainConfig, train

VOCAB, SEQ, STEPS, MICRO = 64, 16, 3, 2


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=SEQ,
        )
    )


class RankSource:
    """Global batch of `micro * world` counting rows per (step, micro); rank r gets rows [r*micro, (r+1)*micro)."""

    def __init__(self, micro: int):
        self.micro = micro

    def get(self, step, micro, rank=0, world=1):
        g = torch.Generator().manual_seed(step * 1009 + micro)
        ids = (torch.randint(0, VOCAB, (self.micro * world, 1), generator=g) + torch.arange(SEQ)) % VOCAB
        ids = ids[rank * self.micro : (rank + 1) * self.micro]
        labels = ids.clone()
        labels[:, :3] = -100
        return {"input_ids": ids, "labels": labels, "lang_ids": ids % 3, "group_ids": ids % 2}


def config(micro: int) -> TrainConfig:
    return TrainConfig(
        steps=STEPS,
        lr=0.3,
        adam_eps=1.0,  # update ~ lr * grad: a sum instead of a mean over ranks would show
        grad_clip=0,
        warmup_ratio=0.34,
        micro_batch_size=micro,
        grad_accum=2,
        log_every=1,
        save_every=STEPS,
        progress=False,
    )


def _worker(rank: int, world: int, port: int, out: str, own_accelerator: bool = True) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from langmoe.train.distributed import barrier, world_size

    acc = Accelerator(cpu=True, gradient_accumulation_steps=2) if own_accelerator else None
    assert world_size() == world  # the trainer's own Accelerator must join the gloo group without a GPU
    model = tiny_model()
    res = train(model, RankSource(MICRO), config(MICRO), out, accelerator=acc)
    if rank == 0:
        torch.save(
            {"state": model.state_dict(), "losses": res.losses, "tokens": res.tokens_seen}, f"{out}/rank0.pt"
        )
    barrier()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo test on POSIX only")
# The trainer's own Accelerator is also covered by tests/train/test_launch_cli.py (the documented commands).
@pytest.mark.parametrize("own_accelerator", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["given-accelerator", "trainer-accelerator"])
def test_two_processes_match_one(tmp_path, own_accelerator):
    torch.set_num_threads(1)
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(out), own_accelerator), nprocs=2, join=True)
    got = torch.load(out / "rank0.pt", weights_only=False)

    ref = tiny_model()
    res = train(ref, RankSource(2 * MICRO), config(2 * MICRO), tmp_path / "single")

    assert got["tokens"] == res.tokens_seen == STEPS * 2 * 2 * MICRO * SEQ
    assert got["losses"] == pytest.approx(res.losses, rel=1e-5)
    for name, p in ref.state_dict().items():
        torch.testing.assert_close(got["state"][name], p, rtol=1e-5, atol=1e-6, msg=name)
    # Only rank 0 logs; every rank saved its RNG state into the one checkpoint folder.
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    ckpt = out / "checkpoints" / f"step-{STEPS}"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
