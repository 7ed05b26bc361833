"""LayerMoE's settings: the flat form (`langmoe expand`, `layermoe.run`) and the recipe-entry form."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from langmoe.methods.expansion.config import ExpansionConfig, recipe_settings_class

__all__ = ["LayerMoEConfig", "LayerMoESettings"]


class LayerMoEConfig(ExpansionConfig):
    """LayerMoE settings. The budget counts new experts over all layers (paper: 48 vs MoE-LPR's 120)."""

    budget: int | None = Field(None, ge=1, description="new experts in total; default budget_fraction x uniform")
    budget_fraction: float = Field(0.4, gt=0, le=1, description="of MoE-LPR's uniform count of new experts")
    uniform_experts: int = Field(4, ge=2, description="MoE-LPR's experts per layer (incl. frozen) for the fraction")
    delta: float | None = Field(None, gt=0, description="explicit δ instead of a budget (layers with N<=1 stay dense)")
    allocation: Literal["similarity", "random"] = "similarity"
    top_k_cls: int | None = Field(None, ge=0, description="classifiers in the K most similar MoE layers; default "
                                  "round(cls_share x layers), at least 1 (paper: 7 of 24); 0: no classifier")
    cls_share: float = Field(7 / 24, gt=0, le=1, description="share of layers with a classifier when top_k_cls is "
                             "not given (the official 7 of 24)")
    classifier_mode: Literal["token", "sequence"] = "token"
    cls_weight: float = Field(0.1, ge=0)
    similarity_tokens_per_lang: int = Field(4096, ge=16, description="train tokens per language (paper: 100K)")


LayerMoESettings = recipe_settings_class(LayerMoEConfig, "LayerMoE in a recipe: the method's own settings.")
