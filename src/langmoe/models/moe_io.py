"""Save and load upcycled models as ordinary Hugging Face folders (safetensors + config.json).

The folder's config.json is the dense architecture's config plus `langmoe` (the MoE structure); loading builds the
dense model from the config, re-applies the MoE structure and loads the weights strictly, so the state dict and the
logits are exactly those that were saved. A plain `from_pretrained` would not know the MoE layers: use
`load_moe_pretrained`, or `export_stock` for a stock transformers MoE architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.io import write_folder_atomically  # re-export: the safe folder writer lives in langmoe.io
from langmoe.models.upcycle import MoEStructure, apply_moe_structure, moe_structure

__all__ = ["save_moe_pretrained", "load_moe_pretrained", "write_folder_atomically", "read_safetensors_folder"]


def save_moe_pretrained(model: nn.Module, tokenizer, path: str | Path) -> Path:
    """Write model (safetensors), config (with the MoE structure) and tokenizer (if given) to `path`, atomically."""
    if moe_structure(model) is None:
        raise LangmoeError("model has no MoE structure in config.langmoe: upcycle it first (or use save_pretrained)")

    def writer(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return write_folder_atomically(path, writer)


def read_safetensors_folder(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise LangmoeError(f"{path}: no model.safetensors (or index): not a saved Hugging Face model folder")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(path / f)))
        except (OSError, SafetensorError) as e:  # truncated/corrupt file: say which one
            raise LangmoeError(f"cannot read weights {path / f} ({' '.join(str(e).split())[:150]}): the file is "
                               "corrupt or truncated; re-save the model") from None
    return state


def load_moe_pretrained(path: str | Path, dtype: torch.dtype | None = None, dispatch: str = "auto"):
    """Rebuild a model saved by `save_moe_pretrained`: dense architecture, MoE structure, then the exact weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise LangmoeError(f"{path}: no config.json: not a Hugging Face model folder")
    config = AutoConfig.from_pretrained(path)
    raw = getattr(config, "langmoe", None)
    if not raw:
        raise LangmoeError(f"{path}: config.json has no 'langmoe' MoE structure: load it with from_pretrained")
    structure = MoEStructure.parse(raw)
    state = read_safetensors_folder(path)
    model = AutoModelForCausalLM.from_config(config)
    saved = next((t.dtype for t in state.values() if t.is_floating_point()), None)
    if saved is not None and saved != next(model.parameters()).dtype:
        model = model.to(saved)  # load in the saved precision so the state dict is bit-identical
    apply_moe_structure(model, structure, dispatch=dispatch)
    state = _renamed_for(model, state)
    # from_config may carry extra init work on weights that we overwrite anyway
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_keys(model)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise LangmoeError(
            f"{path}: weights do not match the recorded MoE structure (missing {missing[:3]}, unexpected "
            f"{list(unexpected)[:3]})"
        )
    if tied:
        model.tie_weights()
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    return model


def _renamed_for(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo the key renamings `save_pretrained` applies for legacy names (GPT-NeoX writes lm_head as embed_out)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, apply_renamings
    except ImportError:  # older transformers: keys are saved as they are
        return state
    renamings = [t for t in get_model_conversion_mapping(model, add_legacy=False) if isinstance(t, WeightRenaming)]
    if not renamings:
        return state
    own = model.state_dict().keys()
    return {k if k in own else apply_renamings(k, renamings): v for k, v in state.items()}


def _tied_keys(model: nn.Module) -> set[str]:
    """State-dict names that share storage with another (e.g. lm_head.weight tied to the embeddings)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, t in model.state_dict(keep_vars=True).items():
        key = t.data_ptr()
        if key in seen and t.numel():
            tied.add(name)
        else:
            seen[key] = name
    return tied


def load_model_any(path: str | Path, dtype: torch.dtype | None = None):
    """(model, tokenizer or None) from a dense HF folder or an upcycled one (config.langmoe), for the CLI."""
    from transformers import AutoModelForCausalLM

    from langmoe.models.base import load_tokenizer, quiet_transformers, resolve_model_path

    p = resolve_model_path(path)
    raw = json.loads((p / "config.json").read_text(encoding="utf-8"))
    if raw.get("langmoe"):
        model = load_moe_pretrained(p, dtype=dtype)
    else:
        try:
            with quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype or torch.float32)
        except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken folder
            raise LangmoeError(f"cannot load the model in {p} ({type(e).__name__}): check config.json + weights") from e
        model.eval()
    tokenizer = None
    if any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = load_tokenizer(p)
    return model, tokenizer
