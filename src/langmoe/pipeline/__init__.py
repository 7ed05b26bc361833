"""The method-agnostic run machinery: `run.run_recipe` (every system of a recipe into one run folder), the run
context (`context.RecipeRun`), the cached stage runner (`runner`), stage helpers (`stages`), model folders
(`models`) and summary numbers (`summary`). Methods live in `langmoe.methods.<name>` and are found through
`langmoe.registry`; nothing here imports a method folder."""
