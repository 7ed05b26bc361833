"""LayerMoE: layer-wise expert allocation by cross-lingual similarity, with old/new routing classifiers (§3)."""

from langmoe.methods.expansion.report import REPORT_SECTIONS
from langmoe.methods.layermoe.allocation import allocate, random_allocation, solve_delta, top_k_layers
from langmoe.methods.layermoe.config import LayerMoEConfig, LayerMoESettings
from langmoe.methods.layermoe.plan import budget_of, make_plan, measure_similarity
from langmoe.methods.layermoe.similarity import ffn_input_mean_units, layer_similarity, mean_pair_cosine
from langmoe.methods.layermoe.system import run, run_layermoe
from langmoe.registry import register_method

NAME = "layermoe"
LABEL = "LayerMoE"

__all__ = [
    "LayerMoEConfig", "run", "make_plan", "measure_similarity", "budget_of", "allocate", "solve_delta",
    "random_allocation", "top_k_layers", "ffn_input_mean_units", "layer_similarity", "mean_pair_cosine",
    "NAME", "LABEL",
]

register_method(NAME, LayerMoESettings, run_layermoe, label=LABEL, order=61, expand=run,
                expand_config_cls=LayerMoEConfig, report_sections=REPORT_SECTIONS)
