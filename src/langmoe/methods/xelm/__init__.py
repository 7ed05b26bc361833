"""X-ELM (arXiv 2401.10440): K copies of the base, each trained on one language group, scored by language or as
an ensemble. The groups are the recipe's language groups (provided by DMoE's analysis), or `groups` given (e.g. a
random grouping: the control that tells whether the grouping or the separate branches make X-ELM's gain)."""

from typing import Literal

from pydantic import Field

from langmoe.config import MethodConfig, is_partition
from langmoe.methods.xelm.system import run_xelm
from langmoe.registry import register_method
from langmoe.train.optim import OptimSettings


class XelmSettings(MethodConfig):
    """Branches share the recipe's `budget_steps` (split over the groups); `optim` defaults to the shared one."""

    optim_fields = {"optim": None}
    ensemble: Literal["uniform", "posterior"] = Field(
        "posterior", description="ensemble weights: uniform, or each branch's likelihood of the prefix")
    groups: list[list[str]] | None = Field(
        None, description="the branches' languages (None: the recipe's language groups, from DMoE's analysis)")
    optim: OptimSettings = OptimSettings()

    def check(self, recipe) -> None:
        if self.groups is not None and not is_partition(self.groups, recipe.languages):
            raise ValueError("xelm groups must partition `languages` into non-empty groups (each language once)")


register_method("xelm", XelmSettings, run_xelm, label="X-ELM (by language)", order=40,
                row_labels={"_ensemble": "ensemble"})
