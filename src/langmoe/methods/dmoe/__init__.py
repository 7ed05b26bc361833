"""DMoE: group languages by parameter deviation, then scale selected layers into group experts.

Analysis (docs/methods.md §1 A-C): `deviation` (per-language probes, language vectors), `sketch` (random projections),
`grouping` (balanced groups, ARI/NMI), `layer_selection` (which layers become MoE); `analysis` chains them as run
stages. Training and evaluation: `build`, `stages`, `new_language`; `system` wires the `dmoe` and `dmoe_random`
systems; `report` is their part of the HTML report. See docs/dmoe.md and docs/dmoe-analysis.md.
"""

from langmoe.methods.dmoe.analysis import ensure_groups
from langmoe.methods.dmoe.config import DmoeSettings
from langmoe.methods.dmoe.report import REPORT_SECTIONS
from langmoe.methods.dmoe.system import run_dmoe, run_dmoe_random
from langmoe.registry import register_method, register_provider

register_method("dmoe", DmoeSettings, run_dmoe, label="DMoE", order=20, row_labels={"_hard": "hard routing"},
                report_sections=REPORT_SECTIONS)
register_method("dmoe_random", DmoeSettings, run_dmoe_random, label="DMoE, random groups", order=30,
                row_labels={"_hard": "hard routing"})
register_provider("language_groups", ensure_groups)
