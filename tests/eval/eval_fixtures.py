"""Small, hand-checkable fixtures: a character-level tokenizer and an in-memory corpus."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

CHARS = ["<|endoftext|>", "a", "b", "c", "é", " ", "d"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {c: i for i, c in enumerate(CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


@dataclass
class Doc:
    id: str
    lang: str
    text: str
    source: str = "test"


class ListCorpus:
    """Duck-typed Corpus: {lang: {split: [texts]}}."""

    def __init__(self, data: dict[str, dict[str, list[str]]]):
        self.data = data

    def languages(self) -> list[str]:
        return list(self.data)

    def iter_documents(self, lang, split):
        for i, text in enumerate(self.data[lang].get(split, [])):
            yield Doc(f"{lang}-{split}-{i}", lang, text)

    def num_chars(self, lang, split):
        return sum(len(t) for t in self.data[lang].get(split, []))
