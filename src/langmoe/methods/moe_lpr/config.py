"""MoE-LPR's settings: the flat form (`langmoe expand`, `moe_lpr.run`) and the recipe-entry form."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from langmoe.methods.expansion.config import ExpansionConfig, recipe_settings_class

__all__ = ["MoELPRConfig", "MoELPRSettings"]


class MoELPRConfig(ExpansionConfig):
    """MoE-LPR settings; `num_experts` counts the frozen FFN (paper: 6 = 1 frozen + 5 new). `variant`: the MoE, or
    a dense baseline at the same tokens on the same data (`full_ft`: every parameter; `lora`: peft adapters)."""

    num_experts: int = Field(4, ge=2)
    variant: Literal["moe_lpr", "full_ft", "lora"] = "moe_lpr"
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class MoELPRSettings(recipe_settings_class(MoELPRConfig, "MoE-LPR in a recipe: the method's own settings.")):
    @model_validator(mode="after")
    def _moe_only(self):
        if self.variant != "moe_lpr":
            raise ValueError(f"variant {self.variant!r}: in a recipe list the baselines as systems (cpt, lora); "
                             "the variants are for `langmoe expand` and benchmarks/expansion_builtin.py")
        return self
