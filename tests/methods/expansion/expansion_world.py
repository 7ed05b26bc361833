"""A tiny expansion world: synthetic languages (own alphabets), a char tokenizer, a 2-layer Llama, fast settings."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
import tiny_world  # noqa: E402  (the shared synthetic corpus, char tokenizer and tiny Llama)

# Disjoint alphabets (except fr/nl): the expansion languages are really new to a base trained on the old ones.
ALPHABETS = {"en": "abcdef", "de": "ghijkl", "es": "mnopqr", "it": "stuvwx", "fr": "abcxyz", "nl": "ghiyz"}
EOS = tiny_world.EOS


def make_corpus(root: Path, langs=("en", "de", "es", "it", "fr", "nl"), docs=(30, 3, 3), seed: int = 0,
                empty: tuple[str, ...] = ()) -> Path:
    return tiny_world.make_corpus(root, langs, docs, seed, alphabets=ALPHABETS, empty=empty)


def char_tokenizer():
    return tiny_world.char_tokenizer(ALPHABETS)


def make_base(root: Path, seed: int = 0, layers: int = 2) -> Path:
    return tiny_world.make_base(root, seed, layers, alphabets=ALPHABETS)


def fast_config(tmp: Path, **over) -> dict:
    corpus = tmp / "corpus"
    if not corpus.exists():
        make_corpus(corpus)
    base = tmp / "base"
    if not base.exists():
        make_base(base)
    cfg = {
        "model": str(base), "corpus": str(corpus), "new": ["es", "it"], "old": ["en", "de"],
        "block_len": 16, "micro_batch_size": 4, "max_train_tokens_per_lang": 3000,
        "stage1": {"steps": 4, "lr": 3e-3, "warmup_ratio": 0.0}, "stage2": {"steps": 4, "lr": 3e-3, "warmup_ratio": 0.0},
        "replay_share": 0.5, "threads": 1,
        "eval": {"window": 32, "stride": 16, "max_chars_per_lang": 300, "batch_size": 4, "routing_tokens_per_lang": 64},
    }
    cfg.update(over)
    return cfg


def expansion_run(tmp: Path, config_cls=None, name: str = "moe_lpr", **over):
    """(a set-up `RecipeRun` in `tmp/run` for one expansion, the method's config) on the tiny world."""
    from langmoe.methods.expansion.inputs import read_input
    from langmoe.methods.expansion.oneshot import one_system_recipe
    from langmoe.methods.moe_lpr import MoELPRConfig
    from langmoe.models.folders import resolve_model_path
    from langmoe.pipeline.context import RecipeRun

    cfg = (config_cls or MoELPRConfig)(**fast_config(tmp, **over))
    langs = list(dict.fromkeys(read_input(resolve_model_path(cfg.model)).known_langs + cfg.old + cfg.new))
    run = RecipeRun(one_system_recipe(cfg, name, langs), tmp / "run")
    run.setup()
    return run, cfg
