"""Helpers for the data tests: corpus folders written to tmp paths and a hand-checkable character tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

CHARS = ["<|endoftext|>", "a", "b", "c", " ", "é", "д"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, id = position in CHARS; eos = pad = id 0."""
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(CHARS)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def write_txt(path: Path, docs: list[str]) -> Path:
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def small_folder(root: Path, n_docs: int = 30) -> Path:
    """de.txt (n_docs paragraphs) + fr.jsonl (n_docs records), with non-ASCII text."""
    root.mkdir(parents=True, exist_ok=True)
    write_txt(root / "de.txt", [f"Straße Nummer {i} ist schön.\nZweite Zeile {i}." for i in range(n_docs)])
    write_jsonl(root / "fr.jsonl", [{"id": f"f{i}", "text": f"Le café numéro {i} est déjà fermé."}
                                    for i in range(n_docs)])
    return root
