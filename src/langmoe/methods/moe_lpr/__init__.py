"""MoE-LPR: expand a dense model to new languages with frozen expert 0 and language-prior routing (docs/methods.md §2)."""

from langmoe.methods.expansion.report import REPORT_SECTIONS
from langmoe.methods.moe_lpr.config import MoELPRConfig, MoELPRSettings
from langmoe.methods.moe_lpr.system import run, run_moe_lpr, uniform_plan
from langmoe.registry import register_method

NAME = "moe_lpr"
LABEL = "MoE-LPR"

__all__ = ["MoELPRConfig", "run", "uniform_plan", "NAME", "LABEL"]

register_method(NAME, MoELPRSettings, run_moe_lpr, label=LABEL, order=60, expand=run, expand_config_cls=MoELPRConfig,
                report_sections=REPORT_SECTIONS)
