"""The `lora` entry of a recipe's `systems`: `{name: lora, r: 8, alpha: 16, ...}`."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field

from langmoe.config import MethodConfig
from langmoe.train.optim import OptimSettings

PEFT_MISSING = "the lora system needs peft: pip install 'langmoe[peft]' (or pip install peft)"


class LoraSettings(MethodConfig):
    """Adapter shape and training. `optim` defaults to the recipe's shared optimiser settings."""

    optim_fields = {"optim": None}
    r: int = Field(8, ge=1, description="rank of each low-rank update")
    alpha: float = Field(16.0, gt=0, description="scale: the update is (alpha / r) · B·A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt; 'all-linear': every linear layer of the decoder "
                                  "(attention and FFN projections), not the LM head")
    merge: bool = Field(True, description="merge the adapters into the base weights and save a plain HF "
                                          "folder; false: save the adapter folder (peft) and evaluate base + adapter")
    optim: OptimSettings = OptimSettings()

    def check(self, recipe) -> None:
        if importlib.util.find_spec("peft") is None:
            raise ValueError(PEFT_MISSING)

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, bias="none",
                          target_modules=self.target_modules, task_type="CAUSAL_LM")
