"""How held-out text is scored: the one evaluation-settings class of langmoe (recipes, `langmoe expand`,
`langmoe eval` / `langmoe pretrain`). The contexts differ only in defaults, declared here side by side: a recipe
scores at the training length on less text per language (it evaluates many systems), `langmoe expand` on more,
`langmoe eval` at the shipped base's pretraining length (256) with the unigram baseline beside the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = ["EvalSettings", "RECIPE_EVAL", "EXPAND_EVAL", "RecipeEval", "ExpandEval", "with_defaults", "default_for"]


SPLITS = ("train", "valid", "test")


class EvalSettings(BaseModel):
    """Sliding-window scoring of held-out text; defaults are `langmoe eval`'s (see `eval_field` for the others)."""

    model_config = ConfigDict(extra="forbid")
    split: str = Field("test", description="the corpus split scored: train, valid or test")
    window: int = Field(256, ge=2, description="tokens a scored window sees")
    stride: int = Field(128, ge=1)
    max_chars_per_lang: int | None = Field(20_000, gt=0)
    batch_size: int = Field(8, gt=0)
    per_document: bool = Field(False, description="no context across documents")
    routing_tokens_per_lang: int = Field(4096, gt=0, description="held-out tokens per language for routing stats")
    unigram: bool = Field(True, description="also score the add-one unigram baseline (estimated on the train split)")
    # train characters per language the unigram is estimated on: more than any built-in language has (1.1M), and
    # a bound on the cost for a large corpus (None: the whole train split)
    unigram_train_chars_per_lang: int | None = Field(10_000_000, ge=1)

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str) -> str:
        if v not in SPLITS:
            raise ValueError(f"unknown split {v!r}: choose {', '.join(SPLITS)}")
        return v


# A recipe: at the training length (data.block_len's default), less text (many systems), no unigram column.
RECIPE_EVAL = {"window": 128, "stride": 64, "max_chars_per_lang": 6000, "unigram": False}
# `langmoe expand`: like a recipe, on more text per language.
EXPAND_EVAL = {"window": 128, "stride": 64, "max_chars_per_lang": 20_000, "unigram": False}


def with_defaults(defaults: Mapping[str, Any]) -> Any:
    """`EvalSettings` as a config field's type whose unset values take `defaults` (a context's own)."""

    def fill(v: Any) -> Any:
        return {**defaults, **v} if isinstance(v, Mapping) else v

    return Annotated[EvalSettings, BeforeValidator(fill)]


def default_for(defaults: Mapping[str, Any]) -> Any:
    """The field default of such a type: `EvalSettings(**defaults)`."""
    return Field(default_factory=lambda: EvalSettings(**defaults))


RecipeEval = with_defaults(RECIPE_EVAL)
ExpandEval = with_defaults(EXPAND_EVAL)
