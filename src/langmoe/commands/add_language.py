"""`langmoe add-language`: add one or several languages to a DMoE model, one after another (docs/methods.md §1 G)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "add-language", help="add new languages to a DMoE model as new experts, keeping old languages",
        description="For each language in turn (lifelong): copy the expert that scores it best into a new expert "
                    "in every MoE layer, lower the new router row on old-language inputs, and train the new "
                    "expert and its router row (old experts and rows frozen, old-language replay). Writes the "
                    "model to a new folder and prints the new language's perplexity under the base, before and "
                    "after, and every old language's change.",
    )
    p.add_argument("--model", required=True, help="DMoE model folder (a stage-2 or new-language `model/` folder)")
    p.add_argument("--lang", required=True, help="new language code(s), comma separated, added in this order")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder with old and new languages" + MIX_HELP)
    p.add_argument("--out", required=True, help="new output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that langmoe did not write")
    p.add_argument("--base", default=None, help="the dense base the DMoE was built from (adds a 'base' column)")
    p.add_argument("--groups", default=None,
                   help="old languages by expert, e.g. 'en,de/fr,es/ru,uk' (default: the model folder's "
                        "langmoe_languages.json)")
    p.add_argument("--steps", type=int, default=None, help="training steps per language (default 50)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-4)")
    p.add_argument("--replay", type=float, default=None, help="old-language share of each micro-batch (0.25)")
    p.add_argument("--keep-out", type=float, default=None,
                   help="weight of the hinge keeping the new expert out of old tokens' top-k (default 1)")
    p.add_argument("--routing", choices=["gate", "router"], default=None,
                   help="how learned routing reaches the new expert: a language gate (default; old tokens keep "
                        "their routing) or the copied router row (the paper)")
    p.add_argument("--max-intrusion", type=float, default=None,
                   help="gate: share of each old language's tokens allowed to reach the new expert (0.02)")
    p.add_argument("--init", choices=["margin", "copy"], default=None, help="new router row (default margin)")
    p.add_argument("--margin", type=float, default=None, help="logit gap below the source on old languages (2)")
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--block-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=150_000, help="training tokens per language")
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--stride", type=int, default=64)
    p.add_argument("--max-chars", type=int, default=6000, help="test characters per language (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_precision_options(p, record="add_language.json")
    p.set_defaults(func=run)
    add_token_store_option(p)


def parse_groups(text: str) -> dict[str, int]:
    from langmoe.errors import LangmoeError

    out: dict[str, int] = {}
    for e, part in enumerate(text.split("/")):
        for x in (y.strip() for y in part.split(",")):
            if not x:
                continue
            if x in out:
                raise LangmoeError(f"--groups lists {x!r} twice: give each old language one expert")
            out[x] = e
    if not out:
        raise LangmoeError("--groups is empty: write e.g. 'en,de/fr,es'")
    return out


def old_languages(model_dir: Path, groups: str | None) -> dict[str, int]:
    """Each old language's expert: from the model folder's languages file, or from --groups (which must then
    agree with that file when the folder has one: a contradicting --groups would write wrong metadata)."""
    from langmoe.errors import LangmoeError
    from langmoe.methods.dmoe.new_language_stage import LANGUAGES_FILE

    f = model_dir / LANGUAGES_FILE
    recorded = _recorded_languages(f) if f.is_file() else None
    if groups:
        given = parse_groups(groups)
        if recorded is not None and given != recorded:
            raise LangmoeError(f"--groups {groups!r} contradicts {f} ({_differences(given, recorded)}): leave "
                               "--groups out to use the model's record")
        return given
    if recorded is None:
        raise LangmoeError(f"{model_dir} has no {LANGUAGES_FILE}: give the old languages with --groups "
                           "'en,de/fr,es/...' (expert 0 first)")
    return recorded


def _recorded_languages(f: Path) -> dict[str, int]:
    from langmoe.errors import LangmoeError
    from langmoe.io import read_json

    try:
        expert_of = read_json(f).get("expert_of")
    except (ValueError, AttributeError):
        expert_of = None
    if not isinstance(expert_of, dict) or not expert_of or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in expert_of.values()):
        raise LangmoeError(f"{f} is damaged (it needs \"expert_of\": {{language: expert index}}): restore it, or "
                           "delete it and give the old languages with --groups")
    return {str(k): int(v) for k, v in expert_of.items()}


def _differences(given: dict[str, int], recorded: dict[str, int]) -> str:
    """The first few disagreements between --groups and the record, e.g. `de: expert 1, recorded 0`."""
    out = []
    for x in sorted({*given, *recorded}):
        if x not in recorded:
            out.append(f"{x}: not in the record")
        elif x not in given:
            out.append(f"{x}: missing (recorded on expert {recorded[x]})")
        elif given[x] != recorded[x]:
            out.append(f"{x}: expert {given[x]}, recorded {recorded[x]}")
    return "; ".join(out[:3]) + (f"; {len(out) - 3} more" if len(out) > 3 else "")


def check_experts_exist(expert_of: dict[str, int], blocks: list[Any], model_dir: Path) -> None:
    """Every old language's expert index must be an expert of every MoE layer."""
    from langmoe.errors import LangmoeError

    n = min(b.num_experts for b in blocks)
    beyond = sorted(x for x, e in expert_of.items() if e >= n)
    if beyond:
        raise LangmoeError(f"the old languages' groups name expert {max(expert_of.values())} ({', '.join(beyond)}) "
                           f"but {model_dir} has {n} experts per MoE layer: give one group per expert")


def add_languages(model, tokenizer, corpus, langs: list[str], expert_of: dict[str, int], settings: dict[str, Any],
                  train_config: dict[str, Any], work: Path, eval_kwargs: dict[str, Any], block_len: int,
                  max_tokens: int | None, base_model=None, log=None) -> list[dict[str, Any]]:
    """Add `langs` one after another to `model` (in place); each language then counts as old for the next."""
    from langmoe.methods.dmoe.config import NewLanguageSettings
    from langmoe.methods.dmoe.new_language import NewLanguageJob, add_language

    results = []
    expert_of = dict(expert_of)
    for i, lang in enumerate(langs):
        job = NewLanguageJob(tokenizer, corpus, lang, dict(expert_of), NewLanguageSettings(lang=lang, **settings),
                             {**train_config, "seed": train_config.get("seed", 0) + i}, eval_kwargs, block_len,
                             max_tokens, base_model=base_model, log=log or (lambda _m: None))
        res = add_language(model, job, work / lang)
        expert_of[lang] = res["new_expert"]
        results.append(res)
    return results


def run(args) -> int:
    from langmoe.io import check_output

    check_output(args.out, "add-language", inputs=[args.model], overwrite=args.overwrite)  # never an input, never a folder langmoe did not write
    from langmoe.commands.eval import set_threads
    from langmoe.console import console as Console
    from langmoe.data.corpus import open_corpus
    from langmoe.errors import LangmoeError
    from langmoe.io import write_json
    from langmoe.methods.dmoe.new_language_stage import write_languages_file
    from langmoe.models.base import resolve_model_path
    from langmoe.models.moe import moe_blocks
    from langmoe.models.moe_io import load_model_any, save_moe_pretrained

    out = Path(args.out)  # check_output refused a foreign folder, or our own one holding a user's file
    set_threads(args.threads)
    langs = [x for x in args.lang.split(",") if x]
    model_dir = resolve_model_path(args.model)
    expert_of = old_languages(Path(model_dir), args.groups)
    clash = [x for x in langs if x in expert_of]
    if clash or len(set(langs)) != len(langs):
        raise LangmoeError(f"--lang must list new languages once each; {', '.join(clash or langs)} already served")
    corpus = open_corpus(args.corpus)
    have = set(corpus.languages())
    missing = [x for x in [*langs, *expert_of] if x not in have]
    if missing:
        raise LangmoeError(f"languages {', '.join(missing)} are not in corpus {args.corpus!r}")
    model, tokenizer = load_model_any(model_dir)
    if not moe_blocks(model):
        raise LangmoeError(f"{model_dir} is not an MoE model: give a DMoE model folder")
    check_experts_exist(expert_of, moe_blocks(model), Path(model_dir))
    if tokenizer is None:
        raise LangmoeError(f"{model_dir} has no tokenizer files: save the tokenizer with the model")
    base = load_model_any(resolve_model_path(args.base))[0] if args.base else None
    settings = {k: v for k, v in {"steps": args.steps, "lr": args.lr, "replay": args.replay, "init": args.init,
                                  "margin": args.margin, "keep_out": args.keep_out, "routing": args.routing,
                                  "max_intrusion": args.max_intrusion}.items() if v is not None}
    train_config = {"steps": 1, "lr": 2e-4, "warmup_ratio": 0.03, "micro_batch_size": args.micro_batch_size,
                    "seed": args.seed, "save_every": 0, "log_every": 10, "progress": False}
    ekw = {"split": "test", "window": args.window, "stride": args.stride,
           "max_chars_per_lang": args.max_chars or None, "batch_size": 8}
    console = Console()
    model.train()
    work = out.parent / f".{out.name}.work"
    results = add_languages(model, tokenizer, corpus, langs, expert_of, settings, train_config, work, ekw,
                            args.block_len, args.max_tokens, base_model=base, log=console.print)
    save_moe_pretrained(model, tokenizer, out)
    write_languages_file(out, {**expert_of, **{r["lang"]: r["new_expert"] for r in results}})
    write_json(out / "add_language.json", {"model": str(model_dir), "results": results})
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    console.print(result_table(results))
    console.print(f"wrote {out}")
    return 0


def result_table(results: list[dict[str, Any]]):
    from rich.table import Table

    t = Table(title="add-language: perplexity (lower is better); learned top-k routing, and hard routing by "
                    "language (hard)")
    for col in ("lang", "expert", "base", "before", "after", "old mean Δ", "old worst Δ", "intrusion",
                "after (hard)", "old Δ (hard)"):
        t.add_column(col, justify="left" if col == "lang" else "right")
    for r in results:
        worst = max(r["old_ppl_change"].items(), key=lambda kv: kv[1])
        t.add_row(r["lang"], f"{r['new_expert']} (from {r['source_expert']})",
                  f"{r['base']['ppl']:.1f}" if r.get("base") else "-", f"{r['before']['ppl']:.1f}",
                  f"{r['after']['ppl']:.1f}", f"{r['old_mean_ppl_change']:+.2%}", f"{worst[0]} {worst[1]:+.2%}",
                  f"{r['intrusion_end']:.1%}", f"{r['after_hard']['ppl']:.1f}",
                  f"{r['old_mean_ppl_change_hard']:+.2%}")
    return t
