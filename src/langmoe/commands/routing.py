"""`langmoe routing`: routing statistics of an MoE model per language, layer and expert, with metrics and plots."""

from __future__ import annotations

import math
import sys

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._token_store_arg import add_token_store_option
from langmoe.errors import LangmoeError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "routing", help="routing statistics of an MoE model per language (counts, JSD, specialisation, plots)",
        description="Route held-out text of each language through an MoE model (langmoe-upcycled or a stock "
                    "transformers MoE) and write routing_counts.json, routing_metrics.json, PNGs and report.html.",
    )
    p.add_argument("--model", required=True, help="MoE model folder")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder (default builtin)" + MIX_HELP)
    p.add_argument("--langs", nargs="+", required=True, help="language codes (space or comma separated)")
    p.add_argument("--out", required=True, help="new output folder (or one `langmoe routing` wrote before: replaced atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that langmoe did not write")
    p.add_argument("--split", default="test", help="corpus split to route (default test)")
    p.add_argument("--tokens-per-lang", type=int, default=20_000, help="token budget per language (default 20000)")
    p.add_argument("--soft", action="store_true", help="sum router probabilities instead of counting top-k hits")
    p.add_argument("--window", type=int, default=None,
                   help="tokens per sequence (default 256, or the model's max positions if smaller)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default 8)")
    p.add_argument("--alpha", type=float, default=None,
                   help="share gap for language-specific experts (default 0.64/E, the paper's 0.01 at 64 experts)")
    p.add_argument("--n-shared", type=int, default=2, help="shared experts to list per layer (default 2)")
    p.add_argument("--log-base", default="e", help="log base of entropy and JSD: e (default, as the paper) or 2")
    p.add_argument("--jsd-layers", nargs="+", type=int, default=None,
                   help="MoE-layer positions (0-based) for JSD heatmaps (default first, middle, last)")
    p.add_argument("--min-tokens", type=int, default=None,
                   help="warn below this many tokens per language (default 20 expected hits per expert)")
    p.add_argument("--adapt-pairs", nargs="+", default=None, metavar="CHILD:PARENT",
                   help="write selected_experts.json (the official shape: SEFT and SSFT k=1/3/5 over the last 2 MoE "
                        "layers) for these children, each through its parent's experts, e.g. gl:pt uk:ru")
    p.add_argument("--compare", default=None, metavar="OTHER",
                   help="another MoE model folder (e.g. the continued-pretrained version) routed on the same text: "
                        "writes compare.json / compare.png with both models' entropy and mean JSD per layer")
    p.add_argument("--compare-lang", default=None,
                   help="with --compare, the language shown alone and left out of the 'without' curves "
                        "(default en when routed, as the paper's English)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)
    add_token_store_option(p)


def parse_base(value: str) -> float:
    if value in ("e", "nat", "nats"):
        return math.e
    try:
        b = float(value)
    except ValueError:
        raise LangmoeError(f"--log-base must be 'e' or a number > 1, got {value!r}") from None
    if not b > 1:
        raise LangmoeError(f"--log-base must be 'e' or a number > 1, got {value!r}")
    return b


def parse_pairs(values: list[str] | None, langs: list[str]) -> dict[str, str] | None:
    """`CHILD:PARENT` items -> {child: parent}; the parents must be routed (in --langs)."""
    if not values:
        return None
    out: dict[str, str] = {}
    for v in (x for item in values for x in item.split(",") if x):
        child, sep, parent = v.partition(":")
        if not sep or not child or not parent or child == parent:
            raise LangmoeError(f"--adapt-pairs takes CHILD:PARENT items (two different codes), got {v!r}")
        if parent not in langs:
            raise LangmoeError(f"--adapt-pairs {v}: parent {parent!r} is not in --langs")
        out[child] = parent
    return out


def compare_focus(args, langs: list[str]) -> str | None:
    if args.compare_lang is not None and args.compare_lang not in langs:
        raise LangmoeError(f"--compare-lang {args.compare_lang!r} is not in --langs ({', '.join(langs)})")
    if args.compare_lang is not None and not args.compare:
        raise LangmoeError("--compare-lang needs --compare OTHER")
    return args.compare_lang if args.compare_lang is not None else ("en" if "en" in langs else None)


def print_comparison(cmp: dict) -> None:
    a, b = (cmp[n] for n in cmp["names"])
    f = cmp["focus"]
    head = f"{'layer':>6} {'H model':>8} {'H other':>8} {'JSD model':>10} {'JSD other':>10}"
    if f:
        head += f" {'JSD-' + f + ' model':>14} {'JSD-' + f + ' other':>14}"
    print(head)
    for j, layer in enumerate(a["layers"]):
        row = f"{layer:>6} {a['entropy_mean'][j]:>8.3f} {b['entropy_mean'][j]:>8.3f} {a['mean_jsd'][j]:>10.3f} " \
              f"{b['mean_jsd'][j]:>10.3f}"
        if f:
            row += f" {a['mean_jsd_without_focus'][j]:>14.3f} {b['mean_jsd_without_focus'][j]:>14.3f}"
        print(row)
    iv, d = cmp.get("difference_intervals"), cmp.get("difference")
    if iv and d:
        print(f"other - model, {100 * iv['level']:.0f}% paired bootstrap interval ({iv['n_boot']} draws):")
        for j, layer in enumerate(a["layers"]):
            print(f"{layer:>6} entropy {d['entropy_mean'][j]:+.4f} [{iv['entropy_mean'][j][0]:+.4f}, "
                  f"{iv['entropy_mean'][j][1]:+.4f}]  mean JSD {d['mean_jsd'][j]:+.4f} "
                  f"[{iv['mean_jsd'][j][0]:+.4f}, {iv['mean_jsd'][j][1]:+.4f}]")


def run(args) -> int:
    from langmoe.io import check_output

    check_output(args.out, "routing", inputs=[args.model, *([args.compare] if args.compare else [])],
                 overwrite=args.overwrite)  # never an input, never a folder langmoe did not write
    import warnings

    from langmoe.commands.eval import set_threads, split_langs
    from langmoe.data.corpus import open_corpus
    from langmoe.methods.routing.pipeline import analyse_routing
    from langmoe.methods.routing.routers import require_moe
    from langmoe.models.moe_io import load_model_any

    set_threads(args.threads)
    base = parse_base(args.log_base)
    langs = split_langs(args.langs)
    pairs = parse_pairs(args.adapt_pairs, langs)
    focus = compare_focus(args, langs)
    corpus = open_corpus(args.corpus)
    model, tok = load_model_any(args.model)
    require_moe(model, "`langmoe routing`")
    other = None
    if args.compare:
        other, _ = load_model_any(args.compare)
        require_moe(other, "`langmoe routing --compare`")
    window = args.window
    if window is None:
        window = min(256, getattr(model.config, "max_position_embeddings", None) or 256)
    if tok is None:
        raise LangmoeError(f"{args.model} has no tokenizer files: save the tokenizer into the model folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = analyse_routing(model, tok, corpus, langs, args.out, split=args.split,
                            tokens_per_lang=args.tokens_per_lang, soft=args.soft, window=window,
                            batch_size=args.batch_size, alpha=args.alpha, n_shared=args.n_shared, base=base,
                            jsd_layers=args.jsd_layers, min_tokens=args.min_tokens, pairs=pairs,
                            compare_model=other, compare_focus=focus, names=("model", "other"))
    for w in m["warnings"]:
        print(f"langmoe routing: warning: {w}", file=sys.stderr)
    del caught
    iv = m.get("intervals") or {}
    print(f"{'layer':>6} {'special.':>9} {'95% interval':>17} {'mean JSD':>9} {'95% interval':>17}")
    for j, (layer, s, d) in enumerate(zip(m["layers"], m["specialisation"], m["mean_pairwise_jsd"], strict=True)):
        cs, cd = (f"[{iv[k][j][0]:.3f}, {iv[k][j][1]:.3f}]" if iv else "" for k in ("specialisation",
                                                                                "mean_pairwise_jsd"))
        print(f"{layer:>6} {s:>9.3f} {cs:>17} {d:>9.3f} {cd:>17}")
    corr = m.get("overlap_vs_last_layer_jsd")
    if corr and corr.get("sentence"):
        print(corr["sentence"])
    if "compare" in m:
        print_comparison(m["compare"])
    print(f"wrote {args.out}/routing_counts.json, routing_metrics.json, report.html"
          + (", compare.json, compare.png" if "compare" in m else ""))
    return 0
