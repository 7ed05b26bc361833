"""Baselines DMoE is compared with at an equal token budget: dense CPT, X-ELM branches, Branch-Train-MiX."""
