"""`langmoe run recipe.yaml`: every system of a recipe, stage by stage, cached and resumable, into one run folder."""

from __future__ import annotations

from pathlib import Path


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
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.config import load_recipe

    overrides = {"threads": args.threads} if args.threads else None
    recipe = load_recipe(args.recipe, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / recipe.name
    execute(recipe, run_dir, report=not args.no_report)
    return 0


def execute(recipe, run_dir: Path, report: bool = True, title: str | None = None) -> dict:
    """Run the recipe, print the summary table and (if the report module is installed) build the report."""
    from rich.console import Console

    from langmoe.pipeline.run import run_recipe

    console = Console()
    console.print(f"[bold]langmoe run[/] {recipe.name} -> {run_dir}")
    summary = run_recipe(recipe, run_dir, log=lambda m: console.print(f"  {m}"))
    report_path = build_report(run_dir, console) if report else None
    print_summary(summary, console, title=title or f"{recipe.name}: held-out {recipe.eval.split} split")
    if report_path:
        console.print(f"HTML report: [bold]{report_path}[/]")
    console.print(f"summary: {run_dir / 'summary.json'}")
    return summary


def build_report(run_dir: Path, console) -> Path | None:
    try:
        from langmoe.report.html import build_report as _build
    except ImportError:
        console.print("[yellow]report module not available: skipping the HTML report[/]")
        return None
    return Path(_build(run_dir))


def print_summary(summary: dict, console, title: str) -> None:
    from rich.table import Table

    rows = summary["systems"]
    langs = summary["languages"]
    t = Table(title=title, caption=summary["note"])
    t.add_column("system")
    for col in ("mean ppl", "mean bpb", *langs, "params total", "params active", "tokens seen"):
        t.add_column(col, justify="right")
    best = min((r["mean_ppl"] for r in rows.values()), default=None)
    for name, r in rows.items():
        style = "bold green" if r["mean_ppl"] == best else None
        t.add_row(name, f"{r['mean_ppl']:.2f}", f"{r['mean_bpb']:.3f}", *[f"{r['ppl'][x]:.1f}" for x in langs],
                  _human(r["params_total"]), _human(r["params_active"]), _human(r["tokens_seen"]), style=style)
    console.print(t)
    nl = summary.get("new_language")
    if nl:
        console.print(
            f"new language [bold]{nl['lang']}[/]: ppl {nl['before']['ppl']:.2f} -> {nl['after']['ppl']:.2f} "
            f"(copied expert {nl['source_expert']}); old languages mean ppl change "
            f"{nl['old_mean_ppl_change']:+.2%}"
        )


def _human(n: int | float) -> str:
    n = float(n)
    for unit in ("", "K", "M", "B"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.2f}{unit}"
        n /= 1000
    return f"{n:.2f}T"
