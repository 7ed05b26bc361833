"""`langmoe group`: balanced language groups from a deviation result (DMoE step B)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "group", help="balanced language groups from deviation similarity (DMoE step B)",
        description="Group languages by the cosine similarity of their deviation vectors into equal-sized groups "
                    "(exhaustive min-diameter search for small sets, seeded growth for large ones) and compare "
                    "with genus, family and random groupings (ARI, NMI).",
    )
    p.add_argument("--deviation", required=True, help="deviation.json written by `langmoe deviation`")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--groups", type=int, help="K: number of groups (sizes differ by at most one)")
    size.add_argument("--group-size", type=int, help="languages per group (leftovers form a last group)")
    p.add_argument("--method", choices=["auto", "exhaustive", "greedy"], default="auto",
                   help="builder (default auto: exhaustive while cheap)")
    p.add_argument("--tie-break", choices=["mean", "official"], default="mean",
                   help="equal-diameter subsets: mean (default) = smaller mean distance; official = first in "
                        "combination order, as the official DMoE script")
    p.add_argument("--seed", type=int, default=0, help="seed of the random comparison grouping")
    p.add_argument("--out", default=None, help="write groups.json here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from langmoe.commands._checks import load_deviation
    from langmoe.console import console as Console  # full width when piped
    from langmoe.io import check_output, write_json
    from langmoe.methods.dmoe.grouping import group_languages, with_comparisons

    if args.out:
        check_output(args.out, "group", inputs=[args.deviation], kind="file", overwrite=args.overwrite)
    dev = load_deviation(args.deviation)
    g = group_languages(dev.langs, dev.similarity, num_groups=args.groups, group_size=args.group_size,
                        method=args.method, tie_break=args.tie_break)
    g = with_comparisons(g, seed=args.seed)
    console = Console()
    t = Table(title=f"groups ({g.method})")
    t.add_column("group", justify="right")
    t.add_column("languages")
    t.add_column("diameter", justify="right")
    for i, (members, d) in enumerate(zip(g.groups, g.diameters or [None] * len(g.groups), strict=True)):
        t.add_row(str(i), " ".join(members), "" if d is None else f"{d:.3f}")
    console.print(t)
    a = Table(title="agreement")
    for col in ("reference", "ARI", "NMI"):
        a.add_column(col, justify="left" if col == "reference" else "right")
    for name, v in g.agreement.items():
        a.add_row(name, f"{v['ari']:.3f}", f"{v['nmi']:.3f}")
    console.print(a)
    if args.out:
        write_json(args.out, g.model_dump(mode="json"))
        console.print(f"wrote {args.out}")
    return 0
