"""Load a base (any Hugging Face causal LM folder, or the shipped tiny base) with one clear error per mistake.

The top of the loading layers: `folders` (paths, dtypes, tokenizer) -> `moe_format` (the saved MoE format) ->
`moe_io` (load / save any folder) -> here. The folder helpers are re-exported, so `langmoe.models.base` stays
the one place a caller needs for "a model and its tokenizer".
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langmoe.models.folders import (
    BUILTIN_MODELS,
    BUILTIN_NAME,
    builtin_base_path,
    load_tokenizer,
    parse_dtype,
    quiet_transformers,
    resolve_model_path,
)
from langmoe.models.moe_io import load_model_any, source_dtype
from langmoe.precision import load_dtype

__all__ = ["BUILTIN_NAME", "BUILTIN_MODELS", "builtin_base_path", "resolve_model_path", "parse_dtype",
           "load_tokenizer", "load_model_and_tokenizer", "quiet_transformers"]


def load_model_and_tokenizer(
    path: str | Path, dtype: str | torch.dtype | None = None, device_map: str | dict | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, fp32 unless `dtype`; "auto": the folder's own dtype) and its tokenizer, dense or MoE
    (native or legacy folder), through the one loader `moe_io.load_model_any` (`device_map` as there); LangmoeError
    on a missing or corrupt folder, a missing tokenizer and a tokenizer whose vocabulary does not fit the model."""
    p = resolve_model_path(path)
    if dtype == "auto":
        dtype = source_dtype(p) or torch.float32
    model, tokenizer = load_model_any(p, dtype=parse_dtype(dtype) or load_dtype(torch.float32), device_map=device_map)
    if tokenizer is None:
        tokenizer = load_tokenizer(p)  # raises the one-line "cannot load a tokenizer" error
    return model, tokenizer
