"""Run by tests/train/test_fsdp.py under `accelerate launch --config_file fsdp.yaml` (or in-process, 1 process).

Trains a tiny upcycled Llama MoE (3 fused experts in layer 1, expert 0 frozen, hard label routing, embeddings
frozen) through `langmoe.train.trainer.train` without passing an Accelerator, so the trainer must pick FSDP up
from the launcher's config. Rank 0 rebuilds a plain model from the gathered weights and saves it with
`save_moe_pretrained`. Built through the public upcycle API only (no MoE block internals).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.models.moe_io import save_moe_pretrained
from langmoe.models.routing import routing
from langmoe.models.upcycle import upcycle
from langmoe.train.distributed import gathered_model, is_main_process
from langmoe.train.trainer import TrainConfig, train

VOCAB, SEQ, STEPS, MICRO, EXPERTS = 64, 16, 3, 2, 3


def tiny_moe() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                         max_position_embeddings=SEQ, tie_word_embeddings=False))
    return upcycle(model, layers=[1], num_experts=EXPERTS, top_k=2, frozen_expert0=True, seed=0)


class RankSource:
    """Global batch of micro*world rows per (step, micro), sliced by rank; group_ids = expert per token."""

    def __init__(self, micro: int):
        self.micro = micro

    def get(self, step, micro, rank=0, world=1):
        g = torch.Generator().manual_seed(step * 1009 + micro)
        ids = (torch.randint(0, VOCAB, (self.micro * world, 1), generator=g) + torch.arange(SEQ)) % VOCAB
        ids = ids[rank * self.micro:(rank + 1) * self.micro]
        labels = ids.clone()
        labels[:, :2] = -100
        return {"input_ids": ids, "labels": labels, "lang_ids": ids % 3, "group_ids": ids % EXPERTS}


def config(micro: int) -> TrainConfig:
    return TrainConfig(steps=STEPS, lr=0.05, adam_eps=1.0, grad_clip=0, warmup_ratio=0.34, micro_batch_size=micro,
                       grad_accum=2, log_every=1, save_every=STEPS, progress=False)


def run(out: Path, micro: int):
    torch.set_num_threads(1)
    model = tiny_moe()
    result = train(model, RankSource(micro), config(micro), out,
                   forward_context=lambda m, b: routing(m, route_labels=b["group_ids"]),
                   trainable=lambda name, p: "embed_tokens" not in name)
    plain = gathered_model(model, result.state_dict, tiny_moe)
    if is_main_process():
        save_moe_pretrained(plain, None, out / "model")
        torch.save({"losses": result.losses, "sharded": result.state_dict is not None}, out / "result.pt")
    return plain, result


if __name__ == "__main__":
    run(Path(sys.argv[1]), MICRO)
