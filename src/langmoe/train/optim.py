"""The optimiser settings every training workflow shares, with one set of defaults.

Defaults are the DMoE paper's continued-training values (AdamW, LR 1e-4 with 3% warmup and cosine decay to 10%,
weight decay 0.01, gradient clipping at norm 0.3): every langmoe workflow except `langmoe pretrain` continues
training a pretrained model, and these are the values the reproduced paper used for exactly that. Training from
scratch (`langmoe pretrain`) states its own values explicitly (see `langmoe.pretrain`), as do the recipes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OPTIM_FIELDS = ("lr", "warmup_ratio", "min_lr_ratio", "weight_decay", "grad_clip", "mixed_precision")


class OptimSettings(BaseModel):
    """AdamW + warmup-cosine settings (the trainer's `TrainConfig` and every recipe stage extend this)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="fraction of steps with linear warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio at the end")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay on matrices (never on norms and biases)")
    grad_clip: float = Field(0.3, ge=0, description="max global grad norm; 0 (or None) turns clipping off")
    mixed_precision: Literal["no", "bf16"] = "no"

    @field_validator("grad_clip", mode="before")
    @classmethod
    def _clip_none(cls, v: Any) -> Any:
        return 0.0 if v is None else v

    def optim_dict(self) -> dict[str, Any]:
        """Only the optimiser fields (subclasses add steps and bookkeeping)."""
        return {k: getattr(self, k) for k in OPTIM_FIELDS}


class StageOptim(OptimSettings):
    """One training stage of a recipe: its optimizer steps plus the optimiser settings."""

    steps: int = Field(gt=0, description="optimizer steps of this stage")
