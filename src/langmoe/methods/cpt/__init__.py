"""Dense continual pre-training (CPT): the base trained on the mixed multilingual data, same token budget."""

from pydantic import Field

from langmoe.config import MethodConfig
from langmoe.methods.cpt.system import run_cpt
from langmoe.registry import register_method
from langmoe.train.optim import OptimSettings


class CptSettings(MethodConfig):
    """CPT trains every parameter for the recipe's `budget_steps`; `optim` defaults to the recipe's shared one."""

    optim_fields = {"optim": None}
    optim: OptimSettings = Field(OptimSettings(), description="optimiser settings (shared `optim` fills gaps)")


register_method("cpt", CptSettings, run_cpt, label="dense CPT", order=10)
