"""`langmoe upcycle`: turn chosen FFN layers of an HF causal LM into MoE layers of exact expert copies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from langmoe.errors import LangmoeError


class UpcycleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    out: str | None = None
    layers: list[int] | str = "all"
    experts: int | dict[int, int] = Field(4)
    top_k: int = Field(2, ge=1)
    no_renormalize: bool = False
    frozen_expert0: bool = False
    classifier_layers: list[int] = []
    seed: int = 0
    dry_run: bool = False

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, v):
        if isinstance(v, str):
            v = v.strip()
            if v == "all":
                return v
            try:
                return [int(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError("give comma-separated layer indices (e.g. 0,3) or 'all'") from None
        return v

    @field_validator("experts", mode="before")
    @classmethod
    def _experts(cls, v):
        """'4' for every layer, or '0:2,3:4' per layer."""
        if isinstance(v, str):
            try:
                if ":" in v:
                    return {int(a): int(b) for a, b in (p.split(":") for p in v.split(",") if p.strip())}
                return int(v)
            except ValueError:
                raise ValueError("give a number of experts (4) or per layer (0:2,3:4)") from None
        return v


def _int_list(v: str | None) -> list[int]:
    if not v:
        return []
    try:
        return [int(x) for x in v.split(",") if x.strip()]
    except ValueError:
        raise LangmoeError(f"--classifier-layers must be comma-separated integers, got {v!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "upcycle", help="turn FFN layers into MoE layers (experts = exact copies of the FFN)",
        description="Replace the chosen layers' FFN with an MoE block whose experts are exact copies; the result "
                    "computes the same function and is saved as an HF folder (load it with langmoe).",
    )
    p.add_argument("--model", required=True, help="HF model folder or 'builtin'")
    p.add_argument("--layers", default="all", help="comma-separated layer indices, or 'all'")
    p.add_argument("--experts", default="4", help="experts per MoE layer: N, or per layer 0:2,3:4")
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--no-renormalize", action="store_true", help="keep raw top-k probabilities as weights")
    p.add_argument("--frozen-expert0", action="store_true", help="keep expert 0 frozen (MoE-LPR)")
    p.add_argument("--classifier-layers", default=None, help="layers with an old/new classifier (needs frozen expert 0)")
    p.add_argument("--seed", type=int, default=0, help="router init seed")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="dtype of the MoE model (default: the source folder's)")
    p.add_argument("--out", default=None, help="output folder (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="only print the parameter accounting")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder that langmoe did not write (its content is deleted)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def _fmt(n: int) -> str:
    return f"{n:,}" if n < 10_000 else f"{n:,} ({n / 1e6:.2f}M)"


def run(args) -> int:
    import torch
    from rich.table import Table

    from langmoe.console import console as Console  # full width when piped
    from langmoe.models.moe_io import load_model_any, save_moe_pretrained
    from langmoe.models.upcycle import parameter_counts, upcycle

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        cfg = UpcycleConfig(
            model=args.model, out=args.out, layers=args.layers, experts=args.experts, top_k=args.top_k,
            no_renormalize=args.no_renormalize, frozen_expert0=args.frozen_expert0,
            classifier_layers=_int_list(args.classifier_layers), seed=args.seed, dry_run=args.dry_run,
        )
    except ValidationError as e:
        from langmoe.validation import error_line

        first = str(e.errors()[0]["loc"][0]).replace("_", "-")  # the flag, not the field path
        raise LangmoeError(f"--{first}: {error_line(e).split(': ', 1)[-1]}") from None
    if not cfg.dry_run and not cfg.out:
        raise LangmoeError("--out is required (or pass --dry-run to only count parameters)")
    from langmoe.commands._checks import check_model_folder
    from langmoe.io import check_output

    if cfg.out:
        check_output(cfg.out, "upcycle", inputs=[cfg.model], overwrite=args.overwrite)
    check_model_folder(cfg.model)
    from langmoe.models.base import parse_dtype

    model, tokenizer = load_model_any(cfg.model, dtype=parse_dtype(getattr(args, "dtype", None)))
    before = parameter_counts(model)
    upcycle(
        model, cfg.layers, cfg.experts, cfg.top_k, renormalize=not cfg.no_renormalize,
        frozen_expert0=cfg.frozen_expert0, classifier_layers=cfg.classifier_layers, seed=cfg.seed,
    )
    after = parameter_counts(model)
    table = Table(title=f"upcycle {cfg.model}: {after['moe_layers']} MoE layers")
    table.add_column("parameters")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("ratio", justify="right")
    for key in ("total", "active_per_token", "experts", "router", "route_override", "frozen_expert0"):
        b, a = before[key], after[key]
        table.add_row(key, _fmt(b), _fmt(a), f"{a / b:.2f}x" if b else "-")
    Console().print(table)
    if cfg.dry_run:
        return 0
    save_moe_pretrained(model, tokenizer, cfg.out)
    Console().print(f"wrote {cfg.out}")
    return 0
