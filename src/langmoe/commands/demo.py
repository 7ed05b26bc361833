"""`langmoe demo`: the whole DMoE pipeline on the shipped tiny base and the built-in corpus, on a CPU, in minutes.

It runs the built-in recipe (`langmoe/recipes/demo.yaml`): parameter deviation per language, deviation groups,
layer selection, upcycling, the two DMoE training stages, a new language, and the dense continual pre-training
baseline at the same token budget; then prints the per-language table and writes the HTML report.
"""

from __future__ import annotations

from pathlib import Path

from langmoe.commands._token_store_arg import add_token_store_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="DMoE end to end on the built-in corpus and tiny base (CPU, a few minutes)",
        description="Run the built-in DMoE recipe (deviation, grouping, layer selection, two-stage training, "
                    "a new language, and a dense CPT baseline at an equal token budget) and print the results. "
                    "Rerunning with the same --out reuses finished stages.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--recipe", default=None, help="use this recipe YAML instead of the built-in demo recipe")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out that langmoe did not write")
    p.set_defaults(func=run)
    add_token_store_option(p)


def run(args) -> int:
    import time

    from langmoe.commands.run import execute
    from langmoe.config import builtin_recipe_path, load_recipe
    from langmoe.console import console as Console

    t0 = time.perf_counter()
    recipe = load_recipe(args.recipe or builtin_recipe_path("demo"), {"threads": args.threads})
    from langmoe.commands._checks import check_model_folder, recipe_inputs
    from langmoe.io import check_output, output_folder

    check_output(args.out, "demo", inputs=recipe_inputs(recipe, args.recipe), overwrite=args.overwrite)
    check_model_folder(recipe.model)
    with output_folder(args.out, "demo", lock=True):  # one process per run folder; bad input leaves no folder
        execute(recipe, Path(args.out), title="langmoe demo: DMoE vs dense CPT (equal token budget), tiny base")
    Console().print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0
