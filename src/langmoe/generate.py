"""Text generation from a dense, upcycled (langmoe MoE) or exported model, seeded so a command repeats exactly.

Why a wrapper around `model.generate`: the model's own generation_config (eos ids, sampling defaults) is the
starting point and only the settings a user gave override it; the prompt is checked against the model's context
length before any work; and each sample has its own seed (seed + i), so sample i does not depend on how many
samples were asked for.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch

from langmoe.errors import LangmoeError
from langmoe.models.moe import needs_full_prefix

__all__ = ["Generation", "build_generation_config", "generate_text", "max_positions", "prompt_from_corpus"]


@dataclass(frozen=True)
class Generation:
    """One sample: `text` is the continuation only (the prompt is not repeated)."""

    prompt: str
    text: str
    token_ids: list[int]  # the new tokens
    seed: int
    stopped_at_eos: bool


def max_positions(model) -> int | None:
    """The longest sequence the model's position embeddings allow, or None when the config sets no limit."""
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def build_generation_config(
    model,
    *,
    max_new_tokens: int = 64,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    greedy: bool = False,
    pad_token_id: int | None = None,
):
    """The model's generation_config (eos ids, sampling defaults) with the given settings on top.

    Sampling is on unless `greedy` is set or the model's generation_config itself says `do_sample: false`.
    """
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise LangmoeError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if temperature is not None and temperature <= 0:
        raise LangmoeError(f"--temperature must be > 0, got {temperature} (use --greedy for argmax decoding)")
    if top_p is not None and not 0 < top_p <= 1:
        raise LangmoeError(f"--top-p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 0:
        raise LangmoeError(f"--top-k must be >= 0 (0 = off), got {top_k}")
    base = getattr(model, "generation_config", None)
    gc = copy.deepcopy(base) if base is not None else GenerationConfig.from_model_config(model.config)
    explicit = base.to_diff_dict() if base is not None else {}
    do_sample = bool(explicit["do_sample"]) if "do_sample" in explicit else True
    if greedy:
        do_sample = False
    gc.do_sample = do_sample
    if do_sample:
        if temperature is not None:
            gc.temperature = float(temperature)
        if top_p is not None:
            gc.top_p = float(top_p)
        if top_k is not None:
            gc.top_k = int(top_k)
    else:  # greedy: sampling knobs would only make transformers warn
        gc.temperature, gc.top_p, gc.top_k = None, None, None
    gc.max_new_tokens = int(max_new_tokens)
    gc.max_length = None
    gc.num_return_sequences = 1
    if gc.eos_token_id is None:
        gc.eos_token_id = model.config.eos_token_id
    if gc.pad_token_id is None:
        eos = gc.eos_token_id
        gc.pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    return gc


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids as in training: starting with the tokenizer's BOS when it has one (langmoe's tokenizers put
    `<|endoftext|>` before every document but do not add it themselves)."""
    if not prompt.strip():
        raise LangmoeError("the prompt is empty: give --prompt TEXT or --lang xx (a test document's start)")
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def _eos_set(gc) -> set[int]:
    eos = gc.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list | tuple) else {int(eos)}


def generate_text(
    model,
    tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    greedy: bool = False,
    seed: int = 0,
    num_samples: int = 1,
) -> list[Generation]:
    """`num_samples` continuations of `prompt`; sample i is drawn with torch seeded by `seed + i`."""
    if tokenizer is None:
        raise LangmoeError("the model folder has no tokenizer (tokenizer.json / tokenizer_config.json): save one "
                           "there with tokenizer.save_pretrained")
    if num_samples < 1:
        raise LangmoeError(f"--num-samples must be at least 1, got {num_samples}")
    gc = build_generation_config(model, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 top_k=top_k, greedy=greedy, pad_token_id=tokenizer.pad_token_id)
    if needs_full_prefix(model):  # a router reads the whole prefix: every step must see the whole sequence
        gc.use_cache = False
    ids = encode_prompt(tokenizer, prompt)
    limit = max_positions(model)
    if limit is not None and len(ids) + max_new_tokens > limit:
        raise LangmoeError(
            f"the prompt ({len(ids)} tokens) + --max-new-tokens {max_new_tokens} exceed the model's {limit} "
            f"positions: use at most --max-new-tokens {max(limit - len(ids), 0)} or a shorter prompt"
        )
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    eos = _eos_set(gc)
    out: list[Generation] = []
    model.eval()
    for i in range(num_samples):
        s = seed + i
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(s)
            seq = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gc)
        new = seq[0, len(ids):].tolist()
        stopped = bool(new) and new[-1] in eos
        body = new[:-1] if stopped else new
        text = tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        out.append(Generation(prompt=prompt, text=text, token_ids=new, seed=s, stopped_at_eos=stopped))
        if not gc.do_sample:  # greedy: every sample would be the same
            break
    return out


def prompt_from_corpus(corpus, lang: str, *, seed: int = 0, max_chars: int = 200, split: str = "test") -> str:
    """The start of a random (seeded) document of `lang`, cut at a word boundary near `max_chars`."""
    if max_chars < 1:
        raise LangmoeError(f"--prompt-chars must be at least 1, got {max_chars}")
    if lang not in corpus.languages():
        from langmoe.data.language_list import normalize_language_code

        lang = normalize_language_code(lang)  # 'deu' -> 'de'; a non-ISO code raises here
    if lang not in corpus.languages():
        raise LangmoeError(f"language {lang!r} is not in the corpus (it has: {', '.join(corpus.languages())}): "
                           "pick one of those, or give --prompt TEXT")
    docs = [d.text for d in corpus.iter_documents(lang, split) if d.text.strip()]
    if not docs:
        raise LangmoeError(f"the corpus has no {split} documents for {lang!r}: give --prompt TEXT")
    text = docs[random.Random(f"{seed}:{lang}").randrange(len(docs))].strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut
