"""Where a model folder is and how to read its small parts: the shipped bases, hub ids, dtypes, the tokenizer.

The bottom of the loading layers: `moe_format` (the saved MoE format), `moe_io` (loading and saving) and
`base` (the model + tokenizer pair every command loads) build on these, and nothing here imports them.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from langmoe.errors import LangmoeError
from langmoe.models.hub import hub_snapshot, looks_like_hub_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["BUILTIN_NAME", "BUILTIN_MODELS", "builtin_base_path", "resolve_model_path", "parse_dtype",
           "load_tokenizer", "quiet_transformers", "one_line"]

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


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from its name (`float32`/`fp32`, `bfloat16`/`bf16`, `float16`/`fp16`); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise LangmoeError(f"unknown dtype {dtype!r}: choose one of {', '.join(table)}")
    return table[dtype]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a model (or tokenizer) folder."""
    from transformers import (
        AutoTokenizer,  # not at the top: the loading layers import without it (`native.py`)
    )

    p = Path(path)
    try:
        return AutoTokenizer.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken folder
        raise LangmoeError(f"cannot load a tokenizer from {p} ({type(e).__name__}: {one_line(e)}): "
                           "save one there with tokenizer.save_pretrained") from e


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


def one_line(e: BaseException) -> str:
    """An exception's text on one line, at most 200 characters (for the one-line errors)."""
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
