"""`langmoe report`: the self-contained HTML report of a run folder."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write RUN_DIR/report.html from a run folder's JSON results",
        description="Build one self-contained HTML file (plots embedded) from the results in a run folder: "
                    "systems, per-language scores, deviation, groups, MoE layers, routing, config. Missing "
                    "parts are skipped with a note.",
    )
    p.add_argument("run_dir", help="run folder (as written by `langmoe run`)")
    p.add_argument("--out", default=None, help="HTML path (default RUN_DIR/report.html)")
    p.add_argument("--title", default=None, help="page title")
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.report.html import build_report

    path = build_report(args.run_dir, out=args.out, title=args.title)
    print(f"wrote {path}")
    return 0
