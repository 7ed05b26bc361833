"""The model an expansion starts from: a dense model (first expansion) or a model a langmoe expansion wrote
(lifelong: its lineage says which languages expert 0 serves and which it learned since). Read from the folder
before any weights load, so bad input is one line before anything runs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langmoe.data.corpus import choose_languages
from langmoe.errors import LangmoeError
from langmoe.models.moe_format import NATIVE_MODEL_TYPE, MoEStructure

__all__ = ["CONFIG_KEY", "EXPANSION_FILE", "InputModel", "read_input", "check_languages", "new_lineage"]

EXPANSION_FILE = "expansion.json"
CONFIG_KEY = "langmoe_expansion"  # model.config attribute recording expansion lineage (lands in config.json)
_STOCK_MOE_KEYS = ("num_local_experts", "num_experts", "moe_intermediate_size")


@dataclass
class InputModel:
    path: Path
    kind: Literal["dense", "expansion"]
    lineage: dict[str, Any] = field(default_factory=dict)  # expert0_langs, known_langs, generations (lifelong)

    @property
    def known_langs(self) -> list[str]:
        return list(self.lineage.get("known_langs", []))


def read_input(path: Path) -> InputModel:
    """What kind of model `path` is; a stock MoE or an MoE no langmoe expansion wrote is refused."""
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    dense = raw.get("base_config", raw) if raw.get("model_type") == NATIVE_MODEL_TYPE else raw
    stock_moe = [k for k in _STOCK_MOE_KEYS if dense.get(k)]
    if stock_moe and not raw.get("langmoe"):
        raise LangmoeError(f"{path} is a stock MoE model ({stock_moe[0]} in config.json), not a dense model: expand a "
                           "dense model, or a model written by `langmoe expand`")
    if not raw.get("langmoe"):
        return InputModel(path, "dense")
    lineage = dict(raw.get(CONFIG_KEY) or dense.get(CONFIG_KEY) or {})
    if not lineage and (path / EXPANSION_FILE).is_file():
        lineage = json.loads((path / EXPANSION_FILE).read_text(encoding="utf-8")).get("lineage", {})
    struct = MoEStructure.parse(raw["langmoe"])
    if not lineage or not all(s.frozen_expert0 for s in struct.layers.values()):
        raise LangmoeError(f"{path} is an MoE model that no langmoe expansion wrote (no frozen expert 0 / expansion "
                           "record): expand a dense model, or a model written by `langmoe expand`")
    return InputModel(path, "expansion", lineage)


def check_languages(new: Sequence[str], old: Sequence[str], corpus, model: InputModel) -> list[str]:
    """Languages exist in the corpus; in a lifelong expansion the new ones were not learned before. Returns the
    expert-0 languages."""
    choose_languages(corpus, list(new) + list(old))
    if model.kind == "dense":
        return list(old)
    again = sorted(set(new) & set(model.known_langs))
    if again:
        raise LangmoeError(f"new languages {again} were already learned by this model: choose other new languages")
    return list(model.lineage.get("expert0_langs", old))


def new_lineage(prev: Mapping[str, Any], new: Sequence[str], old: Sequence[str], expert0: Sequence[str], method: str,
                counts: Mapping[int, int]) -> dict[str, Any]:
    """The lineage after this expansion: languages expert 0 serves, every language learned, one more generation."""
    known = list(dict.fromkeys(list(prev.get("known_langs", expert0)) + list(old) + list(new)))
    gens = list(prev.get("generations", []))
    gens.append({"method": method, "new": list(new), "experts": {str(k): int(v) for k, v in counts.items()}})
    return {"expert0_langs": list(expert0), "known_langs": known, "generations": gens}
