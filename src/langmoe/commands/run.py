"""`langmoe run recipe.yaml`: every system of a recipe, stage by stage, cached and resumable, into one run folder."""

from __future__ import annotations

from pathlib import Path

from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run a DMoE recipe (analysis, training, baselines, evaluation, report); resumable",
        description="Run every system of a recipe YAML into a run folder. Finished stages are cached by a hash of "
                    "their inputs; rerunning the same command after a crash resumes where it stopped.",
    )
    p.add_argument("recipe", help="recipe YAML (see recipes/dmoe.yaml)")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<recipe name>)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (overrides the recipe)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing run folder that langmoe did not write")
    add_precision_options(p, record=_summary_json)
    p.set_defaults(func=run)
    add_token_store_option(p)


def _summary_json(args) -> Path:
    """The run's summary.json (where the peak memory is recorded)."""
    from langmoe.commands._checks import run_name_folder
    from langmoe.config import load_recipe

    return (Path(args.run_dir) if args.run_dir else run_name_folder(load_recipe(args.recipe).name)) / "summary.json"


def run(args) -> int:
    from langmoe.config import load_recipe

    overrides = {"threads": args.threads} if args.threads is not None else None
    recipe = load_recipe(args.recipe, overrides)
    from langmoe.commands._checks import check_model_folder, recipe_inputs, run_name_folder
    from langmoe.io import check_output, output_folder

    run_dir = Path(args.run_dir) if args.run_dir else run_name_folder(recipe.name)
    check_output(run_dir, "run", inputs=recipe_inputs(recipe, args.recipe), overwrite=args.overwrite,
                 flag="--run-dir")
    check_model_folder(recipe.model)
    with output_folder(run_dir, "run", lock=True):  # one process per run folder; bad input leaves no folder
        execute(recipe, run_dir, report=not args.no_report)
    return 0


def execute(recipe, run_dir: Path, report: bool = True, title: str | None = None) -> dict:
    """Run the recipe, print the summary table and (if the report module is installed) build the report."""
    from langmoe.console import console as wide_console
    from langmoe.pipeline.run import run_recipe

    console = wide_console()
    console.print(f"[bold]langmoe run[/] {recipe.name} -> {run_dir}")
    summary = run_recipe(recipe, run_dir, log=lambda m: console.print(f"  {m}"))
    report_path = build_report(run_dir, console) if report else None
    print_summary(summary, console, title=title or f"{recipe.name}: held-out {recipe.eval.split} split")
    if report_path:
        console.print(f"HTML report: [bold]{report_path}[/]")
    console.print(f"summary: {run_dir / 'summary.json'}")
    from langmoe.diagnostics import report_warnings, summary_warnings

    report_warnings(summary_warnings(summary))
    return summary


def build_report(run_dir: Path, console) -> Path | None:
    try:
        from langmoe.report.html import build_report as _build
    except ImportError:
        console.print("[yellow]report module not available: skipping the HTML report[/]")
        return None
    return Path(_build(run_dir))


def print_summary(summary: dict, console, title: str) -> None:
    """Two tables that fit a terminal: one row per system, then perplexity per language (systems as columns)."""
    from rich.table import Table

    rows = summary["systems"]
    langs = summary["languages"]
    best = min((r["mean_ppl"] for r in rows.values()), default=None)
    t = Table(title=title)
    for col in ("system", "mean ppl", "mean bpb", "params total", "params active", "tokens seen", "routing acc"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for name, r in rows.items():
        acc = r.get("routing_accuracy")
        acc_s = f"{sum(acc.values()) / len(acc):.1%}" if acc else ""
        t.add_row(name, f"{r['mean_ppl']:.2f}", f"{r['mean_bpb']:.4f}", _human(r["params_total"]),
                  _human(r["params_active"]), _human(r["tokens_seen"]), acc_s,
                  style="bold green" if r["mean_ppl"] == best else None)
    console.print(t)
    console.print(summary["note"], style="dim")  # a line of its own: a caption would wrap to the table's width
    per = Table(title="perplexity per language (held-out)")
    per.add_column("lang")
    for name in rows:
        per.add_column(name, justify="right")
    for x in langs:
        vals = [rows[n]["ppl"][x] for n in rows]
        low = min(vals)
        per.add_row(x, *[f"[bold]{v:.1f}[/]" if v == low else f"{v:.1f}" for v in vals])
    console.print(per)
    nl = summary.get("new_language")
    if nl:
        console.print(
            f"new language [bold]{nl['lang']}[/]: ppl {nl['before']['ppl']:.2f} -> {nl['after']['ppl']:.2f} "
            f"(copied expert {nl['source_expert']}: {', '.join(nl['source_group'])}); old languages' mean ppl "
            f"change {nl['old_mean_ppl_change']:+.1%}"
        )


def _human(n: int | float) -> str:
    n = float(n)
    for unit in ("", "K", "M", "B"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.2f}{unit}"
        n /= 1000
    return f"{n:.2f}T"
