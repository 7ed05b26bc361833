"""A saved-and-loaded round trip and a spied generation for any route override (the gate and classifier tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import make_base  # noqa: E402


def tiny_base(tmp: Path):
    """(dense fp32 model, tokenizer) of the tiny world's char-level Llama (3 layers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_base(tmp / "base")
    return AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), AutoTokenizer.from_pretrained(
        str(base))


def round_trip(model, tokenizer, folder: Path):
    """Save `model`, load it back: (loaded model, logits before, logits after) on fixed random ids."""
    from langmoe.models.moe_io import load_model_any, save_moe_pretrained

    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    save_moe_pretrained(model, tokenizer, folder)
    loaded, _ = load_model_any(folder)
    loaded.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        return loaded, ref, loaded(input_ids=ids).logits


def generation_cache_flags(model, tokenizer) -> list[bool]:
    """The `use_cache` that `generate_text` hands to `model.generate` (greedy, 4 new tokens)."""
    from langmoe.generate import generate_text

    seen: list[bool] = []
    real = model.generate
    model.generate = lambda **kw: (seen.append(kw["generation_config"].use_cache), real(**kw))[1]
    try:
        generate_text(model, tokenizer, "ab", max_new_tokens=4, greedy=True)
    finally:
        del model.generate
    return seen
