"""`langmoe lm-eval`: lm-evaluation-harness tasks on a model loaded the langmoe way (dense, native MoE, export)."""

from __future__ import annotations

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.errors import LangmoeError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lm-eval", help="run lm-evaluation-harness tasks on a model (needs `pip install 'langmoe[eval]'`)",
        description="Load the model with langmoe's loader (so MoE folders are scored as MoE) and run "
                    "lm-evaluation-harness tasks on it, offline. langmoe_bpb_<lang> / langmoe_cont_<lang> (groups "
                    "langmoe_bpb, langmoe_cont) are built from the corpus's test split on the fly; other local "
                    "tasks come from --include-path folders (docs/lm-eval.md).",
    )
    p.add_argument("--model", required=True, help="model folder, hub id (org/name) or 'builtin'")
    p.add_argument("--tasks", nargs="+", required=True, help="task or group names (space or comma separated)")
    p.add_argument("--include-path", nargs="+", default=None, help="folders with extra task YAML files")
    p.add_argument("--limit", type=float, default=None,
                   help="documents per task (an integer), or a fraction of each task if < 1")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="corpus for the langmoe_* tasks (default builtin)" + MIX_HELP)
    p.add_argument("--langs", nargs="+", default=None, help="languages of the langmoe_bpb / langmoe_cont groups")
    p.add_argument("--bootstrap-iters", type=int, default=0, help="lm-eval bootstrap iterations for stderr (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the results as JSON here (a new file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.commands.eval import as_command, set_threads, split_langs
    from langmoe.eval.lm_eval_bridge import run_lm_eval

    if args.out:  # before the (long) evaluation: never an input, never a file langmoe did not write
        from langmoe.io import check_output

        check_output(args.out, "lm-eval", inputs=[args.model, args.corpus, *(args.include_path or [])], kind="file",
                     overwrite=args.overwrite)
    set_threads(args.threads)
    limit = args.limit
    if limit is not None:
        if limit <= 0:
            raise LangmoeError(f"--limit must be positive, got {limit}")
        limit = int(limit) if limit >= 1 else limit
    if args.batch_size < 1:
        raise LangmoeError(f"--batch-size must be at least 1, got {args.batch_size}")
    record = run_lm_eval(
        args.model, split_langs(args.tasks, "--tasks"), include_path=args.include_path, limit=limit,
        batch_size=args.batch_size, dtype=args.dtype, device=args.device, num_fewshot=args.num_fewshot,
        corpus=args.corpus, langs=split_langs(args.langs), bootstrap_iters=args.bootstrap_iters, seed=args.seed,
    )
    record["command"] = as_command("lm-eval", args)
    print_results(record)
    if args.out:
        from langmoe.io import write_json

        write_json(args.out, record)
    return 0


def print_results(record: dict) -> None:
    from rich.table import Table

    from langmoe.console import console as Console

    t = Table(title=f"lm-eval on {record['model']}" + (f" (limit {record['limit']})" if record["limit"] else ""))
    for col in ("task", "metric", "value", "n"):
        t.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, metrics in record["results"].items():
        for name, value in metrics.items():
            if name.endswith("_stderr") or "_stderr," in name:
                continue
            n = record["n_samples"].get(task)
            t.add_row(task, name, "n/a" if value is None else f"{value:.4f}", "" if n is None else str(n))
    Console().print(t)
