"""Hugging Face Hub ids (`org/name`) as model sources: the cached snapshot folder, so every loader reads the
same local files (the tokenizer and the model loaders both accept a folder); offline without a cached copy is one
line saying how to download it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from langmoe.errors import LangmoeError

__all__ = ["hub_snapshot", "looks_like_hub_id"]

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# Weight formats transformers' PyTorch loader does not read: never download them.
_HUB_IGNORE = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "*.mlmodel",
               "onnx/*", "original/*", "coreml/*", "flax_model*", "tf_model*", "rust_model*"]


def looks_like_hub_id(text: str) -> bool:
    """`org/name` as the Hub spells repository ids (one slash, no leading `.`/`/`, no `..`)."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text and not text.endswith((".", "-"))


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(k, "").strip().lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f in ("1", "true", "yes", "on") for f in flags)


def hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot of `repo_id` (its default branch), downloading it when online and not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    hint = f"`hf download {repo_id}` (or `huggingface-cli download {repo_id}`) while online"
    if _hub_offline():
        raise LangmoeError(f"hub model {repo_id} is not found locally and offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE "
                           f"is set): download it first with {hint}, or give a local folder")
    ignore = list(_HUB_IGNORE)
    try:
        from huggingface_hub import list_repo_files

        if any(f.endswith(".safetensors") for f in list_repo_files(repo_id)):
            ignore += ["*.bin", "*.pt", "*.pth"]  # the same weights twice: safetensors is enough
        return Path(snapshot_download(repo_id, ignore_patterns=ignore))
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: all end in the same advice
        raise LangmoeError(f"cannot download hub model {repo_id} ({type(e).__name__}: {_short(e)}): check the "
                           f"id and your network / `hf auth login`, or download it with {hint}") from e


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
