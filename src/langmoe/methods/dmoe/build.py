"""DMoE step D: build the DMoE model from the dense base (METHODS §1 D), and save/load/count it.

In each selected layer the FFN becomes K exact copies (one expert per language group) behind a bias-free router
initialised N(0, 0.02) (seeded); other layers stay dense. Right after building, the model computes the same
function as the base (renormalised top-k of identical experts, or hard routing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from langmoe.errors import LangmoeError

_EXPERT_WEIGHTS = ("w_gate", "w_up", "w_out", "w_in", "b_gate", "b_up", "b_in", "b_out")


def build_dmoe(model, layers: Sequence[int], num_groups: int, top_k: int = 2, seed: int = 0):
    """Upcycle `layers` of the dense `model` (in place) into `num_groups` experts each, learned top-k routing."""
    from langmoe.models.upcycle import upcycle

    layers = sorted({int(x) for x in layers})
    if not layers:
        raise LangmoeError("no MoE layers selected: lower epsilon or give moe_layers")
    if not 1 <= top_k <= num_groups:
        raise LangmoeError(f"top_k must be between 1 and num_groups={num_groups}, got {top_k}")
    return upcycle(model, layers, num_groups, top_k, router_init="normal", seed=seed)


def add_language_expert(model, source_expert: int) -> int:
    """Copy `source_expert` (weights + router row) into a new last expert in every MoE layer; its index."""
    from langmoe.models.moe import moe_blocks
    from langmoe.models.upcycle import add_expert

    new = {add_expert(model, b.layer_idx, source_expert) for b in moe_blocks(model)}
    if len(new) != 1:
        raise LangmoeError(f"MoE layers have different numbers of experts ({sorted(new)}): cannot add one index")
    return new.pop()


def is_expert_param(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in _EXPERT_WEIGHTS


def is_router_param(name: str) -> bool:
    return name.endswith("router.weight")


def params(model, hard: bool = False) -> dict[str, int]:
    """Total and active-per-token parameters (hard routing: one expert per token)."""
    from langmoe.models.moe import moe_blocks
    from langmoe.models.upcycle import parameter_counts

    c = parameter_counts(model)
    active = c["active_per_token"]
    if hard:
        for b in moe_blocks(model):
            per_expert = sum(getattr(b, n)[0].numel() for n in b._weight_names)
            active -= per_expert * (b.top_k - 1)
    return {"total": int(c["total"]), "active": int(active)}


def saver(tokenizer) -> Callable[[Any, Path], None]:
    """`save(model, dest)`: a Hugging Face folder whose config.json records the MoE structure (`langmoe`)."""

    def save(model, dest: Path) -> None:
        model.save_pretrained(str(dest))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(dest))

    return save


def load(path: str | Path):
    """Rebuild the MoE model saved by `saver` (config -> dense skeleton -> MoE structure -> exact weights)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from langmoe.models.upcycle import apply_moe_structure

    path = Path(path)
    config = AutoConfig.from_pretrained(str(path))
    structure = getattr(config, "langmoe", None)
    if not structure:
        raise LangmoeError(f"{path} holds no MoE structure (config.langmoe): it is not a langmoe MoE model")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    apply_moe_structure(model, structure)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise LangmoeError(f"{path} has no safetensors weights: re-save the model")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    if getattr(config, "tie_word_embeddings", False):
        state.setdefault("lm_head.weight", state.get("model.embed_tokens.weight"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise LangmoeError(f"{path}: weights do not match the MoE structure (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}): re-save the model")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.train()
    return model
