"""The one loader/saver of langmoe model folders (dense or MoE), used by every command and the pipeline.

An MoE folder is in the native format (`moe_format.py`: `model_type: langmoe_moe`, the dense config under
`base_config`, the MoE structure under `langmoe`), so stock transformers refuses it instead of misreading it.
Loading builds the dense model from the config, re-applies the MoE structure and loads the weights strictly, so
state dict, dtype, generation_config and logits are exactly those that were saved. Folders of earlier versions
(dense `model_type` plus a `langmoe` key, experts named `w_gate/w_up/w_out`) load transparently; saving them again
writes the native format (`langmoe convert` does that).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from langmoe.data.tokenizer import check_tokenizer_matches
from langmoe.errors import LangmoeError
from langmoe.io import write_folder_atomically  # re-export: the safe folder writer lives in langmoe.io
from langmoe.models.folders import (
    load_tokenizer,
    one_line,
    parse_dtype,
    quiet_transformers,
    resolve_model_path,
)
from langmoe.models.moe import MoEBlock, needs_full_prefix
from langmoe.models.moe_format import (
    NATIVE_MODEL_TYPE,
    STRUCTURE_VERSION,
    MoEStructure,
    dense_config_from_dict,
    make_native,
    moe_structure,
    renamed_override_weights,
)
from langmoe.models.upcycle import apply_moe_structure
from langmoe.precision import load_dtype

__all__ = [
    "save_moe_pretrained",
    "load_moe_pretrained",
    "load_model_any",
    "folder_kind",
    "source_dtype",
    "write_folder_atomically",
    "read_safetensors_folder",
    "dispatch_by_map",
    "tied_keys",
]


# Weights are split into safetensors shards of at most this size (plus model.safetensors.index.json), as the Hub
# recommends; transformers 5 writes one file up to 50GB. Every langmoe save of a model folder uses it.
MAX_SHARD_SIZE = "5GB"


def save_moe_pretrained(model: nn.Module, tokenizer, path: str | Path, max_shard_size: int | str = MAX_SHARD_SIZE
                        ) -> Path:
    """Write model (safetensors, sharded over `max_shard_size`), native config, generation_config and tokenizer
    (if given) to `path`, atomically.

    A tokenizer whose vocabulary does not fit the model's embeddings is refused (nothing is written).
    """
    if moe_structure(model) is None:
        raise LangmoeError("model has no MoE structure in config.langmoe: upcycle it first (or use save_pretrained)")
    if tokenizer is not None:
        check_tokenizer_matches(model, tokenizer)
    make_native(model)
    if needs_full_prefix(model) and getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = False  # a router reads the whole prefix (stock generate must not cache)

    def writer(tmp: Path) -> None:
        with quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

    return write_folder_atomically(path, writer)


def read_safetensors_folder(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors file(s) (one file or an index of shards), each in its own freshly
    allocated tensor (`_read_safetensors`): one copy of the weights in memory, no file mapping."""
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
            state.update(_read_safetensors(path / f))
        except (OSError, ValueError, KeyError, SafetensorError) as e:  # truncated/corrupt file: say which one
            raise LangmoeError(f"cannot read weights {path / f} ({' '.join(str(e).split())[:150]}): the file is "
                               "corrupt or truncated; re-save the model") from None
    return state


_ST_DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
              "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
              "F64": torch.float64, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file read tensor by tensor into fresh (64-byte aligned) tensors. safetensors' own loader maps
    the file (its pages then count as resident on top of the copy a model keeps) and gives 8-byte aligned buffers,
    which take other SIMD paths than a model's own tensors: the last bits of the logits would differ."""
    out: dict[str, torch.Tensor] = {}
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            t = torch.empty(meta["shape"], dtype=_ST_DTYPES[meta["dtype"]])
            start, end = meta["data_offsets"]
            if end - start != t.numel() * t.element_size():
                raise ValueError(f"{name}: {end - start} bytes for a {meta['dtype']} tensor of shape {meta['shape']}")
            f.seek(8 + n + start)
            if t.numel() and f.readinto(t.reshape(-1).view(torch.uint8).numpy()) != end - start:
                raise ValueError(f"{name}: the file ends inside the tensor")
            out[name] = t
    return out


def _read_config(path: Path) -> dict:
    if not (path / "config.json").exists():
        raise LangmoeError(f"{path}: no config.json: not a Hugging Face model folder")
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LangmoeError(f"{path / 'config.json'} is not valid JSON: re-save the model with save_pretrained") from e


def folder_kind(path: str | Path) -> str:
    """'native' (langmoe_moe), 'legacy' (dense model_type + `langmoe` key, written before 0.2) or 'dense'."""
    raw = _read_config(Path(path))
    if raw.get("model_type") == NATIVE_MODEL_TYPE:
        return "native"
    return "legacy" if raw.get("langmoe") else "dense"


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def source_dtype(path: str | Path) -> torch.dtype | None:
    """The dtype a folder's config.json records (`dtype` / `torch_dtype`), if any."""
    raw = _read_config(Path(path))
    base = raw.get("base_config", raw)
    name = raw.get("dtype") or raw.get("torch_dtype") or base.get("dtype") or base.get("torch_dtype")
    return _DTYPES.get(str(name)) if name else None


def _legacy_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename/re-layout the expert tensors of a version-1 folder (`w_gate [E, D, F]` ...) to the stock names."""
    out = dict(state)
    for name, block in model.named_modules():
        if not isinstance(block, MoEBlock):
            continue
        p = f"{name}."
        parts = [("frozen.", "_frozen"), ("trainable.", "")] if block.frozen_expert0 else [("", "")]
        for sub, suffix in parts:
            old = {n: out.pop(f"{p}{n}{suffix}") for n in ("w_gate", "w_up", "w_in", "w_out", "b_gate", "b_up",
                                                             "b_in", "b_out") if f"{p}{n}{suffix}" in out}
            q = f"{p}experts.{sub}"
            if "w_gate" in old:
                out[q + "gate_up_proj"] = torch.cat([old["w_gate"].transpose(1, 2), old["w_up"].transpose(1, 2)],
                                                    dim=1).contiguous()
                if "b_gate" in old:
                    out[q + "gate_up_proj_bias"] = torch.cat([old["b_gate"], old["b_up"]], dim=-1)
            if "w_in" in old:
                out[q + "up_proj"] = old["w_in"].transpose(1, 2).contiguous()
                if "b_in" in old:
                    out[q + "up_proj_bias"] = old["b_in"]
            if "w_out" in old:
                out[q + "down_proj"] = old["w_out"].transpose(1, 2).contiguous()
            if "b_out" in old:
                out[q + "down_proj_bias"] = old["b_out"]
        if f"{p}classifier.weight" in out:
            out[f"{p}router.classifier.weight"] = out.pop(f"{p}classifier.weight")
    return out


def load_moe_pretrained(path: str | Path, dtype: torch.dtype | None = None, dispatch: str = "auto"):
    """Rebuild a model saved by `save_moe_pretrained` (native or legacy folder): dense architecture, MoE structure,
    then the exact weights, in the saved dtype unless `dtype` is given; generation_config as saved.

    The architecture is built on the meta device (no random init, no second copy) and the read tensors become the
    parameters (`assign`): peak memory is one copy of the weights."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM  # not at the top: see `native.py`

    path = Path(path)
    raw = _read_config(path)
    legacy = raw.get("model_type") != NATIVE_MODEL_TYPE
    if legacy:
        if not raw.get("langmoe"):
            raise LangmoeError(f"{path}: config.json has no 'langmoe' MoE structure (a dense model): load it with "
                               "from_pretrained or load_model_any")
        base = {k: v for k, v in raw.items() if k != "langmoe"}
    else:
        base = raw.get("base_config")
        if not isinstance(base, dict) or "model_type" not in base:
            raise LangmoeError(f"{path}: native MoE config.json lacks 'base_config': the folder is damaged")
    written = int((raw.get("langmoe") or {}).get("version", 1))
    structure = MoEStructure.parse(raw.get("langmoe") or {})
    config = dense_config_from_dict(base, None)
    state = read_safetensors_folder(path)
    with quiet_transformers(), init_empty_weights(include_buffers=False):  # buffers (rotary tables) stay real
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # on the meta device transformers leaves tied weights apart until asked
    saved = next((t.dtype for t in state.values() if t.is_floating_point()), None)
    if saved is not None and saved != next(model.parameters()).dtype:
        model = model.to(saved)  # load in the saved precision so the state dict is bit-identical
    apply_moe_structure(model, structure, dispatch=dispatch)
    if legacy:
        state = _legacy_state(state, model)
    if written < STRUCTURE_VERSION:
        state = renamed_override_weights(state)
    state = {k: v.to(saved) if v.is_floating_point() else v for k, v in _renamed_for(model, state).items()}
    seen: set[int] = set()  # tied parameters are one object (meta tensors have no storage to compare)
    tied = {n for n, t in model.state_dict(keep_vars=True).items() if id(t) in seen or seen.add(id(t))}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise LangmoeError(
            f"{path}: weights do not match the recorded MoE structure (missing {missing[:3]}, unexpected "
            f"{list(unexpected)[:3]})"
        )
    if tied:
        model.tie_weights()
    _load_generation_config(model, path)
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


def _load_generation_config(model: nn.Module, path: Path) -> None:
    if (path / "generation_config.json").exists():
        from transformers import GenerationConfig  # not at the top: see `native.py`

        model.generation_config = GenerationConfig.from_pretrained(str(path))


def tied_keys(model: nn.Module) -> set[str]:
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


def load_model_any(path: str | Path, dtype: torch.dtype | str | None = None,
                   device_map: str | dict | None = None):
    """(model, tokenizer or None) from a dense HF folder, a native MoE folder or a legacy MoE folder: the loader
    every langmoe command uses. `dtype=None` keeps the folder's own dtype. Eval mode. A tokenizer saved there
    must fit the model's vocabulary. `device_map` places the model as transformers' does ("auto", "balanced",
    "sequential": accelerate spreads the layers over the GPUs and the CPU; a device name or an explicit map)."""
    from transformers import AutoModelForCausalLM  # not at the top: see `native.py`

    p = resolve_model_path(path)
    dtype = parse_dtype(dtype) or load_dtype(None)  # a training command's --dtype, else the folder's own
    if folder_kind(p) == "dense":
        try:
            with quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(
                    str(p), dtype=dtype or "auto", **({"device_map": device_map} if device_map is not None else {}))
        except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken folder
            raise LangmoeError(f"cannot load the model in {p} ({type(e).__name__}: {one_line(e)}): check that "
                               "the folder holds a complete causal LM (config.json + weights)") from e
        model.eval()
    else:
        model = load_moe_pretrained(p, dtype=dtype)
        if device_map is not None:
            model = dispatch_by_map(model, device_map)
    tokenizer = None
    if any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = load_tokenizer(p)
        check_tokenizer_matches(model, tokenizer)
    return model, tokenizer


def dispatch_by_map(model: nn.Module, device_map: str | dict) -> nn.Module:
    """Place a loaded model as `from_pretrained(device_map=...)` would: "auto" / "balanced" / "balanced_low_0" /
    "sequential" are planned by accelerate over the GPUs and the CPU (a decoder layer, MoE block included, is never
    split), a device name puts everything there, a dict is used as given."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    plans = ("auto", "balanced", "balanced_low_0", "sequential")
    if isinstance(device_map, str) and device_map in plans:
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        memory = None if device_map == "sequential" else get_balanced_memory(
            model, no_split_module_classes=no_split, low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    elif not isinstance(device_map, dict):
        device_map = {"": str(device_map)}
    if "disk" in device_map.values():
        raise LangmoeError("the model does not fit in GPU and CPU memory (device_map would offload to disk): use a "
                           "machine with more memory or a smaller dtype (--dtype bfloat16)")
    return dispatch_model(model, device_map=device_map)
