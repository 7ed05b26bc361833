"""`langmoe recipes`: list the recipes shipped with langmoe, or copy one out to edit and run."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recipes", help="list the shipped recipes, or copy one out (--copy NAME DIR)",
        description="List the recipes shipped with langmoe. --copy NAME DIR writes DIR/NAME.yaml (never overwriting "
                    "an existing file), to edit and run with `langmoe run DIR/NAME.yaml`.",
    )
    p.add_argument("--copy", nargs=2, metavar=("NAME", "DIR"), help="copy recipe NAME into folder DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.recipe_files import copy_recipe, list_recipes

    if args.copy:
        target = copy_recipe(*args.copy)
        print(f"wrote {target}; run it with: langmoe run {target} --run-dir runs/{target.stem}")
        return 0
    recipes = list_recipes()
    width = max((len(r.name) for r in recipes), default=4)
    for r in recipes:
        print(f"{r.name.ljust(width)}  {r.description}")
    print("copy one out with: langmoe recipes --copy NAME DIR")
    return 0
