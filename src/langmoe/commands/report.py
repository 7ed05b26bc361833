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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from langmoe.io import check_output
    from langmoe.report.html import build_report

    run_dir = Path(args.run_dir)
    if run_dir.is_dir():  # (a missing or file run_dir gets its own message from build_report)
        out = Path(args.out) if args.out else run_dir / "report.html"
        read = [f for pattern in ("*.json", "*.yaml", "eval/*.json") for f in run_dir.glob(pattern)]
        check_output(out, "report", inputs=read, kind="file",
                     overwrite=args.overwrite)
    path = build_report(args.run_dir, out=args.out, title=args.title)
    print(f"wrote {path}")
    return 0
