"""Checks the commands run on their arguments before any work: each bad value is one LangmoeError line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from langmoe.errors import LangmoeError

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def run_name_folder(name: str, runs: Path = Path("runs")) -> Path:
    """`runs/<name>` for a recipe name that is a plain folder name (no `..`, no `/`, not absolute)."""
    if not isinstance(name, str) or not _SLUG.match(name) or ".." in name:
        raise LangmoeError(f"recipe: name {name!r} must be a simple folder name (letters, digits, '.', '_', '-'; "
                           "no '/' or '..'): it names the run folder runs/<name>; or pass --run-dir")
    return runs / name


def check_model_folder(path: str | None) -> Any:
    """A model folder whose config.json transformers can read (one line naming the file and the problem);
    returns the config."""
    if path is None:
        return None
    from langmoe.models.base import resolve_model_path

    p = resolve_model_path(path)
    cfg = p / "config.json"
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LangmoeError(f"{cfg} is not UTF-8 text: re-save the model with save_pretrained") from None
    except ValueError:
        raise LangmoeError(f"{cfg} is not valid JSON: re-save the model with save_pretrained") from None
    if not isinstance(raw, dict):
        raise LangmoeError(f"{cfg} must hold a JSON object of config fields: re-save the model with save_pretrained")
    if "model_type" not in raw:
        raise LangmoeError(f"{cfg} has no 'model_type': re-save the model with save_pretrained")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad config
        msg = " ".join(str(e).split())[:160]
        raise LangmoeError(f"{cfg} is not a valid transformers config ({type(e).__name__}: {msg}): fix it or "
                           "re-save the model with save_pretrained") from None


def check_tokenizer_folder(path: str | None) -> None:
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise LangmoeError(f"tokenizer folder {p} does not exist: give a saved tokenizer folder")
    if not p.is_dir():
        raise LangmoeError(f"--tokenizer {p} is a file, not a folder: give the folder written by "
                           "`langmoe tokenizer train` (tokenizer.json + tokenizer_config.json)")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise LangmoeError(f"{p} holds no tokenizer.json or tokenizer_config.json: give a saved tokenizer folder")


def at_least(flag: str, value: int | float | None, low: int | float) -> None:
    if value is not None and value < low:
        raise LangmoeError(f"{flag} must be at least {low}, got {value}")


def load_deviation(path: str):
    """A deviation result whose fields agree: every language has one finite, non-negative deviation per layer,
    and the similarity matrix is square over the languages with finite entries."""
    from langmoe.methods.dmoe.deviation import DeviationResult

    try:
        dev = DeviationResult.load(path)
    except LangmoeError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged vectors file beside the JSON (torch.load)
        vec = Path(path).with_suffix(".vectors.pt")
        raise LangmoeError(f"cannot read {vec} ({type(e).__name__}): delete it or re-run `langmoe deviation`"
                           ) from None
    where = str(path)
    langs = dev.langs
    if not langs:
        raise LangmoeError(f"{where}: langs is empty: re-run `langmoe deviation`")
    if len(set(langs)) != len(langs):
        raise LangmoeError(f"{where}: langs lists a language twice: re-run `langmoe deviation`")
    _check_per_layer(where, "dev_ffn", dev.dev_ffn, langs, dev.num_layers)
    if dev.dev_attn is not None:
        _check_per_layer(where, "dev_attn", dev.dev_attn, langs, dev.num_layers)
    sim = dev.similarity
    if len(sim) != len(langs) or any(len(row) != len(langs) for row in sim):
        raise LangmoeError(f"{where}: similarity must be a {len(langs)}x{len(langs)} matrix (one row and column "
                           "per language): re-run `langmoe deviation`")
    for i, row in enumerate(sim):
        for j, v in enumerate(row):
            if not math.isfinite(v):
                raise LangmoeError(f"{where}: similarity[{langs[i]}][{langs[j]}] is {v}: re-run the deviation probe")
    bad = [i for i in dev.vector_layers if not 0 <= i < dev.num_layers]
    if bad:
        raise LangmoeError(f"{where}: vector_layers {bad} are outside 0..{dev.num_layers - 1}")
    return dev


def _check_per_layer(where: str, field: str, table: dict[str, list[float]], langs: list[str], layers: int) -> None:
    missing = [x for x in langs if x not in table]
    if missing:
        raise LangmoeError(f"{where}: {field} has no entry for language(s) {', '.join(missing)}: re-run "
                           "`langmoe deviation`")
    extra = [x for x in table if x not in langs]
    if extra:
        raise LangmoeError(f"{where}: {field} has language(s) {', '.join(extra)} that are not in langs")
    if layers < 1:
        raise LangmoeError(f"{where}: num_layers must be at least 1, got {layers}")
    for x in langs:
        vals = table[x]
        if len(vals) != layers:
            raise LangmoeError(f"{where}: {field}[{x}] has {len(vals)} values but num_layers is {layers}: every "
                               "language needs one deviation per layer")
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                raise LangmoeError(f"{where}: {field}[{x}][{i}] is {v}: deviation has NaN or infinite values; "
                                   "re-run the deviation probe (lower the lr?)")
            if v < 0:
                raise LangmoeError(f"{where}: {field}[{x}][{i}] is negative ({v}): a deviation is a norm (>= 0); "
                                   "re-run `langmoe deviation`")


def recipe_inputs(recipe: Any, recipe_path: str | None) -> list[str | None]:
    """The paths a recipe reads (model, corpus, the recipe file itself)."""
    from langmoe.data.corpus import corpus_paths

    return [str(recipe.model), *corpus_paths(recipe.corpus), recipe_path]


def check_corpus(spec: str | list[str], langs: list[str] | None = None) -> Any:
    """Open the corpus, refuse languages it lacks, and warn about files in the wrong script; return it."""
    from langmoe.data.corpus import open_corpus
    from langmoe.diagnostics import corpus_warnings, report_warnings

    corpus = open_corpus(spec)
    if langs:
        have = corpus.languages()
        missing = [x for x in langs if x not in have]
        if missing:
            raise LangmoeError(f"languages {', '.join(missing)} are not in the corpus (it has: {', '.join(have)})")
    report_warnings(corpus_warnings(corpus, langs))
    return corpus
