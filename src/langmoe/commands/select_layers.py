"""`langmoe select-layers`: which layers become MoE layers, from a deviation result (DMoE step C)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "select-layers", help="choose MoE layers by normalised deviation (DMoE step C)",
        description="d_l = mean over languages of the FFN deviation, min-max normalised; layer l becomes MoE iff "
                    "d̂_l >= ε (or the top-n layers).",
    )
    p.add_argument("--deviation", required=True, help="deviation.json written by `langmoe deviation`")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--epsilon", type=float, default=None, help="threshold on d̂_l (default 0.6)")
    how.add_argument("--top-n", type=int, default=None, help="the n most deviating layers")
    p.add_argument("--out", default=None, help="write layers.json here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from langmoe.commands._checks import load_deviation
    from langmoe.console import console as Console  # full width when piped
    from langmoe.io import check_output, write_json
    from langmoe.methods.dmoe.layer_selection import select_layers

    if args.out:
        check_output(args.out, "select-layers", inputs=[args.deviation], kind="file", overwrite=args.overwrite)
    dev = load_deviation(args.deviation)
    eps = 0.6 if args.epsilon is None and args.top_n is None else args.epsilon
    sel = select_layers(dev.dev_ffn, epsilon=eps, top_n=args.top_n)
    console = Console()
    how = f"ε = {eps:g}" if args.top_n is None else f"top {args.top_n}"
    t = Table(title=f"layer selection ({how})")
    for col in ("layer", "mean deviation", "normalised", "MoE"):
        t.add_column(col, justify="right")
    for i, (m, n) in enumerate(zip(sel.mean_deviation, sel.normalised, strict=True)):
        t.add_row(str(i), f"{m:.4g}", f"{n:.3f}", "yes" if i in sel.selected else "",
                  style="bold" if i in sel.selected else None)
    console.print(t)
    if sel.note:
        console.print(f"[yellow]{sel.note}[/yellow]")
    console.print(f"MoE layers: {sel.selected}")
    if args.out:
        write_json(args.out, sel.model_dump(mode="json"))
        console.print(f"wrote {args.out}")
    return 0
