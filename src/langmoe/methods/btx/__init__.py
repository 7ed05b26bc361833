"""Branch-Train-MiX (BTX): K branches trained on their language groups, merged into an all-layer MoE (expert k =
branch k's FFN), then trained with learned routing; the recipe's language groups come from DMoE's analysis."""

from pydantic import Field

from langmoe.config import MethodConfig
from langmoe.methods.btx.system import run_btx
from langmoe.registry import register_method
from langmoe.train.optim import OptimSettings


class BtxSettings(MethodConfig):
    """Branches get `budget_steps - moe_steps` steps (split over the groups), the merged MoE `moe_steps`."""

    optim_fields = {"optim": None}
    moe_steps: int | None = Field(None, gt=0, description="steps of the merged MoE (None: 80% of the budget)")
    top_k: int = Field(2, ge=1, description="experts per token of the merged MoE (capped at the group count)")
    lambda_lb: float = Field(0.02, ge=0, description="load-balancing loss weight of the merged MoE")
    optim: OptimSettings = OptimSettings()

    def moe_steps_in(self, budget_steps: int) -> int:
        return self.moe_steps if self.moe_steps is not None else max(1, budget_steps * 4 // 5)

    def check(self, recipe) -> None:
        if self.moe_steps_in(recipe.budget_steps) >= recipe.budget_steps:
            raise ValueError(f"moe_steps {self.moe_steps} leaves no steps for the branches of budget_steps "
                             f"{recipe.budget_steps}: lower moe_steps")


register_method("btx", BtxSettings, run_btx, label="BTX", order=50)
