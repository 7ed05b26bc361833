"""Routing dynamics and expert-level adaptation on any MoE causal LM (docs/methods.md §4).

- `routers`: find the MoE layers (router, fused experts, top-k family) and mask routing;
- `collect`: per-language / layer / expert top-k counts (or soft probabilities) through router hooks;
- `metrics` + `analysis`: entropy, JSD, specialisation, shares, specific/shared experts, lexical overlap;
- `plots`: PNGs and a standalone report.html;
- `adapt`: SEFT / SSFT / AEFT expert-level fine-tuning with frozen experts kept bit-identical, and baselines.
"""
