"""A tiny model folder + corpus folder on disk and helpers to run the documented launch commands on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import langmoe

ALPHABET = ["<|endoftext|>", *"abcdefghijklmnopqrstuvwxyz .,"]
TEXT = {
    "en": "the cat sat on the mat and the dog ran to the park with a red ball.",
    "de": "die katze sitzt auf der matte und der hund rennt mit dem ball in den park.",
}
BIN = Path(sys.executable).parent  # the venv's bin folder: torchrun and accelerate live next to python

# FSDP2 through Accelerate (docs/distributed.md); no layer class named: Accelerate wraps `_no_split_modules`.
FSDP_YAML = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
machine_rank: 0
main_process_port: 0
mixed_precision: 'no'
use_cpu: false
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_reshard_after_forward: true
  fsdp_offload_params: false
  fsdp_cpu_ram_efficient_loading: false
"""


def char_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(ALPHABET)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def tiny_llama(vocab: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def write_model(path: Path) -> Path:
    tok = char_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_corpus(path: Path, docs: int = 24) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for lang, sentence in TEXT.items():
        words = sentence.split()
        rows = []
        for i in range(docs):
            text = " ".join(words[(i + j) % len(words)] for j in range(12 + i % 5))
            rows.append({"id": f"{lang}{i}", "split": "test" if i % 6 == 0 else "train", "text": text})
        (path / f"{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def env() -> dict[str, str]:
    src = str(Path(langmoe.__file__).resolve().parents[1])
    e = dict(os.environ)
    e.update(PYTHONPATH=src + os.pathsep + e.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
             TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "ACCELERATE_USE_CPU", "ACCELERATE_USE_FSDP"):
        e.pop(k, None)
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
