"""The systems a recipe can compare, one folder each (`base`, `cpt`, `lora`, `dmoe` with `dmoe_random`, `xelm`,
`btx`), registered in `langmoe.registry`. See docs/adding-a-method.md."""
