"""Load a base (any Hugging Face causal LM folder, or the shipped tiny base) with one clear error per mistake."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from langmoe.errors import LangmoeError

BUILTIN_NAME = "builtin"
# Every shipped base, by the name a user passes as --model (standard HF folders built by `langmoe pretrain`):
# the tiny base (all 47 languages), the old-languages-only base for expansion, and the tiny Qwen3-MoE.
BUILTIN_MODELS = {"builtin": "tiny-base", "builtin-g0": "tiny-base-g0", "builtin-moe": "tiny-moe"}


def builtin_base_path(name: str = BUILTIN_NAME) -> Path:
    """Folder of a shipped base (`builtin`: the tiny base)."""
    return Path(__file__).resolve().parent / "builtin" / BUILTIN_MODELS[name]


def resolve_model_path(path: str | Path) -> Path:
    """`"builtin"` → the shipped tiny base (`builtin-g0`, `builtin-moe`: the other shipped bases); an existing
    folder → itself; `org/name` (not a folder) → the snapshot
    folder of that Hugging Face Hub model in the user's cache (downloaded first when online), so the tokenizer
    and model loaders both read the same local files."""
    if str(path) in BUILTIN_MODELS:
        p = builtin_base_path(str(path))
        if not (p / "config.json").is_file():
            raise LangmoeError(
                f"the shipped base {path!r} is missing at {p}: reinstall langmoe or build it with `langmoe pretrain`"
            )
        return p
    p = Path(path).expanduser()
    from langmoe.models.hub import hub_snapshot, looks_like_hub_id

    if not p.exists() and looks_like_hub_id(str(path)):
        p = hub_snapshot(str(path))
        if not (p / "config.json").is_file():
            raise LangmoeError(f"hub model {path} (cached at {p}) has no config.json: it is not a transformers "
                               "model, or its download is incomplete (download it again)")
        return p
    if not p.exists():
        raise LangmoeError(f"model folder {p} does not exist: give a Hugging Face model folder, a hub id "
                           "(org/name) or 'builtin'")
    if not p.is_dir():
        raise LangmoeError(f"{p} is a file, not a model folder: give the folder holding config.json")
    if not (p / "config.json").is_file():
        raise LangmoeError(f"{p} has no config.json: give a Hugging Face model folder (save_pretrained output)")
    return p


def _parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise LangmoeError(f"unknown dtype {dtype!r}: choose one of {', '.join(table)}")
    return table[dtype]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a model (or tokenizer) folder."""
    p = Path(path)
    try:
        return AutoTokenizer.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken folder
        raise LangmoeError(f"cannot load a tokenizer from {p} ({type(e).__name__}: {_one_line(e)}): "
                           "save one there with tokenizer.save_pretrained") from e


def load_model_and_tokenizer(
    path: str | Path, dtype: str | torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, fp32 unless `dtype`) and its tokenizer, dense or MoE (native or legacy folder), through
    the one loader `moe_io.load_model_any`; LangmoeError on a missing or corrupt folder, a missing tokenizer and a
    tokenizer whose vocabulary does not fit the model."""
    from langmoe.models.moe_io import load_model_any

    p = resolve_model_path(path)
    model, tokenizer = load_model_any(p, dtype=_parse_dtype(dtype) or torch.float32)
    if tokenizer is None:
        tokenizer = load_tokenizer(p)  # raises the one-line "cannot load a tokenizer" error
    return model, tokenizer


@contextmanager
def quiet_transformers():
    """No per-shard progress bars while loading or saving (they garble the CLI's one-line errors and tables)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
