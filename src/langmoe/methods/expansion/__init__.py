"""What MoE-LPR and LayerMoE share (docs/expansion.md), beside the two method folders as peft keeps shared tuner
code beside its tuners: `config` (settings), `inputs` (the input model and its lineage), `data` (new-language text
and the old-language replay), `surgery` (new experts, routers, classifiers), `stages` (the one flow: plan, stage 1,
stage 2, evaluation, as cached stages of a `RecipeRun`), `baselines` (dense full fine-tuning / LoRA on the same
data), `oneshot` (`langmoe expand`: the flow as a one-system recipe) and `report` (routing on held-out text, the
report's section)."""
