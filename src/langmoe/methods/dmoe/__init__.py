"""DMoE: group languages by parameter deviation, then scale selected layers into group experts.

Analysis (METHODS §1 A-C): `deviation` (per-language probes, language vectors), `sketch` (random projections),
`grouping` (balanced groups, ARI/NMI), `layer_selection` (which layers become MoE). See docs/dmoe-analysis.md.
"""
