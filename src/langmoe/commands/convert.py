"""`langmoe convert`: rewrite an MoE folder of an earlier langmoe version in the native `langmoe_moe` format."""

from __future__ import annotations

from langmoe.errors import LangmoeError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="rewrite an older langmoe MoE folder in the native format",
        description="Load an MoE folder written by langmoe 0.1 (dense model_type plus a 'langmoe' key) and save it in "
                    "the native format (model_type langmoe_moe), which stock transformers refuses instead of "
                    "misreading. Weights, dtype, generation_config and tokenizer are kept.",
    )
    p.add_argument("--model", required=True, help="MoE folder to convert")
    p.add_argument("--out", required=True, help="new output folder (never the input folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that langmoe did not write")
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.io import check_output

    check_output(args.out, "convert", inputs=[args.model], overwrite=args.overwrite)  # never an input, never a folder langmoe did not write
    from langmoe.models.base import resolve_model_path
    from langmoe.models.moe_io import folder_kind, load_model_any, save_moe_pretrained

    kind = folder_kind(resolve_model_path(args.model))
    if kind == "dense":
        raise LangmoeError(f"{args.model} is a dense model, not an MoE folder: nothing to convert")
    model, tokenizer = load_model_any(args.model)
    save_moe_pretrained(model, tokenizer, args.out)
    print(f"wrote {args.out} (native langmoe_moe format, from a {kind} folder)")
    return 0
