"""`langmoe generate`: continue a prompt (or the start of a test document) with a dense, MoE or exported model."""

from __future__ import annotations

import json

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands.eval import DEVICE_MAP_HELP, DEVICE_MAPS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a model (seeded: the same command gives the same text)",
        description="Continue --prompt TEXT, or the start of a random test document of --lang xx, with a dense, "
                    "upcycled (langmoe MoE) or exported model. Settings default to the model's generation_config; "
                    "flags override them. Sampling is seeded: sample i uses --seed + i.",
    )
    p.add_argument("--model", required=True, help="model folder (dense, langmoe MoE or exported) or 'builtin'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text to continue")
    src.add_argument("--lang", help="use the start of a random test document of this language as the prompt")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="corpus for --lang: 'builtin' (default) or a folder" + MIX_HELP)
    p.add_argument("--prompt-chars", type=int, default=200, help="characters of the document used with --lang")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=None, help="default: the model's generation_config")
    p.add_argument("--top-p", type=float, default=None, help="default: the model's generation_config")
    p.add_argument("--top-k", type=int, default=None, help="default: the model's generation_config (0 = off)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--device-map", choices=DEVICE_MAPS, default=None, help=DEVICE_MAP_HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    from langmoe.generate import generate_text, prompt_from_corpus
    from langmoe.models.moe_io import load_model_any

    if args.prompt is not None:
        prompt = args.prompt
        if not prompt.strip():
            from langmoe.errors import LangmoeError

            raise LangmoeError("the prompt is empty: give --prompt TEXT or --lang xx (a test document's start)")
    else:
        from langmoe.data.corpus import open_corpus

        prompt = prompt_from_corpus(open_corpus(args.corpus), args.lang, seed=args.seed, max_chars=args.prompt_chars)
    model, tokenizer = load_model_any(args.model, device_map=args.device_map)
    gens = generate_text(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, greedy=args.greedy,
                         seed=args.seed, num_samples=args.num_samples)
    if args.json:
        print(json.dumps({"model": str(args.model), "prompt": prompt,
                          "samples": [{"seed": g.seed, "text": g.text, "new_tokens": len(g.token_ids),
                                       "stopped_at_eos": g.stopped_at_eos} for g in gens]},
                         indent=2, ensure_ascii=False))
        return 0
    if args.greedy and args.num_samples > 1:
        print("(greedy decoding gives one sample: every sample would be the same)")
    for i, g in enumerate(gens, 1):
        end = ", stopped at end of text" if g.stopped_at_eos else ""
        print(f"--- sample {i}/{len(gens)} (seed {g.seed}, {len(g.token_ids)} new tokens{end}) ---")
        print(f"[prompt] {prompt}")
        print(f"[generated] {g.text}")
    return 0
