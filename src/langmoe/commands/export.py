"""`langmoe export`: write an upcycled model as a stock transformers MoE (Qwen2-MoE, Qwen3-MoE, Mixtral)."""

from __future__ import annotations

from langmoe.errors import LangmoeError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export an upcycled model to a stock transformers MoE architecture",
        description="Write Qwen2-MoE / Qwen3-MoE / Mixtral weights that plain AutoModelForCausalLM.from_pretrained "
                    "loads with no custom code; the logits are checked against the upcycled model.",
    )
    p.add_argument("--model", required=True, help="folder written by `langmoe upcycle` (or training)")
    p.add_argument("--out", required=True)
    p.add_argument("--arch", default="auto", choices=["auto", "qwen2_moe", "qwen3_moe", "mixtral"])
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="dtype of the exported weights (default: the source folder's)")
    p.add_argument("--no-verify", action="store_true", help="skip reloading and comparing logits")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder that langmoe did not write (its content is deleted)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from langmoe.commands._checks import check_model_folder
    from langmoe.console import console as Console
    from langmoe.io import check_output
    from langmoe.models.export import export_stock
    from langmoe.models.moe_io import load_model_any

    check_output(args.out, "export", inputs=[args.model], overwrite=args.overwrite)
    check_model_folder(args.model)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    from langmoe.models.base import parse_dtype, resolve_model_path
    from langmoe.models.moe_io import folder_kind

    if folder_kind(resolve_model_path(args.model)) == "dense":
        raise LangmoeError(f"{args.model} is a dense model: upcycle (and train) it before exporting")
    model, tokenizer = load_model_any(args.model)
    arch = export_stock(model, args.out, arch=args.arch, tokenizer=tokenizer, verify=not args.no_verify,
                        dtype=parse_dtype(getattr(args, "dtype", None)))
    Console().print(f"wrote {args.out} ({arch}){'' if args.no_verify else ', logits verified'}")
    return 0
