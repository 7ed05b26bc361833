"""`langmoe lm-eval-tasks`: write langmoe's local lm-evaluation-harness tasks (JSONL data + YAML) to a folder."""

from __future__ import annotations

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lm-eval-tasks", help="write local lm-eval tasks (bits per byte, continuation choice) from a corpus",
        description="Write langmoe_bpb_<lang> (rolling log-likelihood, bits per byte) and langmoe_cont_<lang> "
                    "(pick the true next segment of a document) as lm-evaluation-harness task YAML + JSONL data, "
                    "for `langmoe lm-eval --include-path OUT` or `lm_eval --include_path OUT`.",
    )
    p.add_argument("--out", required=True, help="folder to write the tasks into (new, or written by this command)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that langmoe did not write (other files stay)")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder" + MIX_HELP)
    p.add_argument("--langs", nargs="+", default=None, help="language codes (default: all of the corpus)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-docs", type=int, default=100, help="documents per language (default 100)")
    p.add_argument("--max-chars", type=int, default=2000,
                   help="bpb documents cut to this many characters at whitespace, 0 = whole (default 2000)")
    p.add_argument("--choices", type=int, default=4, help="options per continuation question (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.commands.eval import split_langs
    from langmoe.eval.lm_eval_tasks import write_tasks
    from langmoe.io import check_output, output_folder

    check_output(args.out, "lm-eval-tasks", inputs=[args.corpus], overwrite=args.overwrite)
    with output_folder(args.out, "lm-eval-tasks"):  # the task YAMLs name their data by absolute path: written in place
        names = write_tasks(args.out, corpus=args.corpus, langs=split_langs(args.langs), split=args.split,
                            max_docs=args.max_docs, max_chars=args.max_chars, choices=args.choices, seed=args.seed)
    print(f"wrote {len(names)} tasks to {args.out} (groups langmoe_bpb, langmoe_cont): {' '.join(names)}")
    return 0
