"""MoE-LPR: expand a dense model to new languages with frozen expert 0 and language-prior routing (docs/methods.md §2)."""

from langmoe.methods.moe_lpr.method import MoELPRConfig, run, run_dense_baseline, uniform_plan
from langmoe.methods.moe_lpr.system import MoELPRSettings, run_moe_lpr
from langmoe.methods.registry import register_method

NAME = "moe_lpr"
LABEL = "MoE-LPR"

__all__ = ["MoELPRConfig", "run", "run_dense_baseline", "uniform_plan", "NAME", "LABEL"]

register_method(NAME, MoELPRSettings, run_moe_lpr, label=LABEL, order=60)
