"""LoRA baseline: low-rank adapters on the attention and FFN projections of the dense base, trained on the same
blocks for the same budget as dense CPT (the MoE-LPR paper compares against it). Needs `peft` (`langmoe[peft]`).
Walkthrough of how this folder was added: docs/adding-a-method.md."""

from langmoe.methods.lora.config import LoraSettings
from langmoe.methods.lora.system import run_lora
from langmoe.registry import register_method

register_method("lora", LoraSettings, run_lora, label="LoRA (attention + FFN)", order=12)
