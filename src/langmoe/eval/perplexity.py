"""Per-language perplexity and bits per byte on held-out text, with the standard strided sliding window.

How text is scored (one choice, used everywhere so numbers compare):
- Per language, the documents of a split are tokenized one by one (no special tokens) and concatenated into one
  stream, each document preceded by one eos token: ``eos d1 eos d2 eos d3 ...``. The eos tokens are context only:
  they are never scored, so every scored token belongs to a document's text. With ``per_document=True`` each
  document is its own stream ``eos d`` instead (no context crosses documents).
- A stream is cut into windows of ``window`` tokens starting every ``stride`` tokens (the HF strided scheme): each
  token is scored exactly once, in the first window that holds it beyond the previous window's end, so it sees
  between ``window - stride`` and ``window - 1`` tokens of context (``stride`` is capped at ``window - 1``).
- The NLL of every scored token is computed from fp32 log-softmax and summed in fp64.
- ``bits_per_byte = Σ NLL / ln 2 / (UTF-8 bytes of the scored documents)``: it does not depend on the tokenizer, so
  bases with different vocabularies compare. ``ppl = exp(Σ NLL / scored tokens)`` does depend on it.
- ``max_chars_per_lang`` caps the cost: documents are taken in corpus order until the cap, the last one cut to fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from langmoe.console import progress as _progress
from langmoe.data.corpus import choose_languages, open_corpus
from langmoe.errors import LangmoeError
from langmoe.eval.settings import EvalSettings
from langmoe.eval.texts import LangScore, document_tokens
from langmoe.eval.unigram import unigram_bpb
from langmoe.models.base import load_model_and_tokenizer

ForwardContext = Callable[[Any, dict[str, Any]], AbstractContextManager]


def mean_scores(scores: Mapping[str, LangScore]) -> dict[str, float]:
    """Macro averages over languages (each language counts once, whatever its size)."""
    if not scores:
        return {"ppl": float("nan"), "bits_per_byte": float("nan")}
    n = len(scores)
    return {
        "ppl": sum(s.ppl for s in scores.values()) / n,
        "bits_per_byte": sum(s.bits_per_byte for s in scores.values()) / n,
    }


def build_streams(
    token_lists: Sequence[Sequence[int]], sep_id: int, per_document: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, scored) streams: each document preceded by `sep_id`, which is never scored."""
    docs = [list(t) for t in token_lists if len(t) > 0]
    groups = [[d] for d in docs] if per_document else ([docs] if docs else [])
    streams = []
    for group in groups:
        ids: list[int] = []
        scored: list[bool] = []
        for d in group:
            ids.append(sep_id)
            scored.append(False)
            ids.extend(d)
            scored.extend([True] * len(d))
        streams.append((torch.tensor(ids, dtype=torch.long), torch.tensor(scored, dtype=torch.bool)))
    return streams


def iter_windows(n: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first_target) of each window over a stream of n tokens: the targets first_target..end-1 cover
    every position 1..n-1 exactly once (position 0 has no context). The first window is [0, window); each later
    window ends `stride` tokens after the previous one, so its targets see `window - stride` to `window - 1`
    tokens of context. A stride equal to the window acts as `window - 1` (a target needs one token of context)."""
    if window < 2:
        raise LangmoeError(f"window must be at least 2 tokens, got {window}")
    if not 1 <= stride <= window:
        raise LangmoeError(f"stride must be between 1 and the window ({window}), got {stride}")
    step = min(stride, window - 1)
    end = min(window, n)
    if end >= 2:
        yield 0, end, 1
    while end < n:
        first = end
        end = min(end + step, n)
        yield end - window, end, first


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.no_grad()
def score_streams(
    model,
    streams: Sequence[tuple[torch.Tensor, torch.Tensor]],
    window: int,
    stride: int,
    batch_size: int = 8,
    forward_context: ForwardContext | None = None,
    extra: Mapping[str, int] | None = None,
) -> tuple[float, int]:
    """(Σ NLL in nats, scored tokens) over streams. `extra` holds per-language ids (lang_ids, group_ids) that are
    broadcast into the batch handed to `forward_context` (e.g. hard routing of an MoE by group)."""
    device = _model_device(model)
    jobs = []  # (stream index, begin, end, first target)
    for si, (ids, _) in enumerate(streams):
        for begin, end, first in iter_windows(len(ids), window, stride):
            jobs.append((si, begin, end, first))
    nll = torch.zeros((), dtype=torch.float64)
    count = 0
    for j in range(0, len(jobs), batch_size):
        chunk = jobs[j : j + batch_size]
        width = max(end - begin for _, begin, end, _ in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        target = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, (si, begin, end, first) in enumerate(chunk):
            ids, scored = streams[si]
            seg = ids[begin:end]
            input_ids[r, : len(seg)] = seg
            # logits at position p predict token p+1: target[p] = ids[begin+p+1] for scored targets.
            t = torch.arange(first, end)
            keep = scored[t]
            target[r, t[keep] - begin - 1] = ids[t[keep]]
            input_ids[r, len(seg) :] = ids[0]
        batch: dict[str, Any] = {"input_ids": input_ids.to(device), "labels": None}
        for key, value in (extra or {}).items():
            batch[key] = torch.full_like(batch["input_ids"], int(value))
        ctx = forward_context(model, batch) if forward_context is not None else nullcontext()
        with ctx:
            out = model(input_ids=batch["input_ids"])
        logits = out.logits if hasattr(out, "logits") else out[0]
        target = target.to(logits.device)
        mask = target != -100
        if not bool(mask.any()):
            continue
        logp = torch.log_softmax(logits[mask].float(), dim=-1)
        tok_nll = -logp.gather(-1, target[mask].unsqueeze(-1)).squeeze(-1)
        nll += tok_nll.double().sum().cpu()
        count += int(mask.sum())
    return float(nll), count


def _check_vocab(model, tokenizer) -> int:
    sep = tokenizer.eos_token_id
    if sep is None:
        sep = getattr(tokenizer, "bos_token_id", None)
    if sep is None:
        raise LangmoeError("the tokenizer has no eos (or bos) token to separate documents: set tokenizer.eos_token")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise LangmoeError(
            f"tokenizer has {len(tokenizer)} tokens but the model only {vocab}: use the model's own tokenizer"
        )
    return int(sep)


def evaluate_languages(
    model,
    tokenizer,
    corpus,
    langs: Sequence[str] | None = None,
    split: str = "test",
    window: int = 256,
    stride: int = 128,
    max_chars_per_lang: int | None = None,
    forward_context: ForwardContext | None = None,
    batch_size: int = 8,
    per_document: bool = False,
    lang_ids: Mapping[str, int] | None = None,
    group_of: Mapping[str, int] | None = None,
    skip_empty: bool = False,
    progress: str = "off",
    token_store: Any = None,
) -> dict[str, LangScore]:
    """Per-language scores of `model` on `split` (see the module docstring for the exact scheme).

    A language without text in the split raises LangmoeError, or is left out of the result with `skip_empty`.

    `forward_context(model, batch)` wraps every forward; its batch holds `input_ids` and, per token, `lang_ids`
    (from `lang_ids`, default: position in `langs`) and `group_ids` (from `group_of`, default -1).

    `progress`: "off", "bar" (a transient bar when stderr is a terminal) or "lines" (the bar, or one plain line
    per language on stderr when it is not a terminal). `token_store`: read the documents' tokens from a store (see
    `document_tokens`; the scores are the same)."""
    langs = list(langs) if langs is not None else list(corpus.languages())
    if not langs:
        raise LangmoeError("no languages to evaluate: pass --langs or a corpus with languages")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and window > max_pos:
        raise LangmoeError(f"window {window} exceeds the model's max positions {max_pos}: use --window <= {max_pos}")
    sep = _check_vocab(model, tokenizer)
    known = set(corpus.languages())
    ids_of = dict(lang_ids) if lang_ids is not None else {code: i for i, code in enumerate(langs)}
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    scores: dict[str, LangScore] = {}
    from contextlib import ExitStack


    stack = ExitStack()
    bar = stack.enter_context(_progress("eval", len(langs), plain_lines=progress == "lines",
                                        enabled=progress != "off"))
    try:
        for lang in langs:
            if lang not in known:
                raise LangmoeError(f"language {lang!r} is not in the corpus (it has: {', '.join(sorted(known))})")
            token_lists, nbytes, chars, ndocs = document_tokens(tokenizer, corpus, lang, split, max_chars_per_lang,
                                                                token_store)
            if skip_empty and not ndocs:
                continue
            streams = build_streams(token_lists, sep, per_document=per_document)
            extra = {"lang_ids": ids_of.get(lang, -1), "group_ids": (group_of or {}).get(lang, -1)}
            nll, count = score_streams(model, streams, window, stride, batch_size, forward_context, extra)
            scores[lang] = LangScore.from_sums(lang, nll, count, nbytes, chars, ndocs)
            bar.advance(f"{lang}: ppl {scores[lang].ppl:.2f}")
    finally:
        stack.close()
        if was_training and hasattr(model, "train"):
            model.train()
    return scores


# ---- the evaluation table of `langmoe eval` / `langmoe pretrain` ----


def run_eval(
    model, tokenizer, corpus, langs: list[str], settings: EvalSettings, forward_context: ForwardContext | None = None,
    progress: str = "off", token_store: Any = None,
) -> dict[str, Any]:
    """Held-out per-language ppl/bpb (and the unigram baseline) as a JSON-ready table."""
    scores = evaluate_languages(
        model, tokenizer, corpus, langs, split=settings.split, window=settings.window, stride=settings.stride,
        max_chars_per_lang=settings.max_chars_per_lang, batch_size=settings.batch_size,
        per_document=settings.per_document, forward_context=forward_context, skip_empty=True, progress=progress,
        token_store=token_store,
    )
    if not scores:
        raise LangmoeError(f"no language has text in the {settings.split!r} split: choose another split or corpus")
    uni: dict[str, LangScore] = {}
    if settings.unigram:
        uni = unigram_bpb(tokenizer, corpus, list(scores), split=settings.split,
                          max_chars_per_lang=settings.max_chars_per_lang,
                          max_train_chars_per_lang=settings.unigram_train_chars_per_lang,
                          vocab_size=model.config.vocab_size, token_store=token_store)
    table = eval_table(scores, uni, settings)
    table["skipped"] = [x for x in langs if x not in scores]  # no text in this split
    return table


def eval_table(scores: dict[str, LangScore], uni: dict[str, LangScore], settings: EvalSettings) -> dict[str, Any]:
    """JSON-ready table: per language ppl, bpb (and the unigram's bpb), plus macro means."""
    rows = {}
    for lang, s in scores.items():
        row = {"ppl": s.ppl, "bits_per_byte": s.bits_per_byte, "tokens": s.tokens, "bytes": s.bytes, "docs": s.docs}
        if lang in uni:
            row["unigram_bits_per_byte"] = uni[lang].bits_per_byte
            row["beats_unigram"] = s.bits_per_byte < uni[lang].bits_per_byte
        rows[lang] = row
    table: dict[str, Any] = {"settings": settings.model_dump(mode="json"), "langs": rows, "mean": mean_scores(scores)}
    if uni:
        table["mean"]["unigram_bits_per_byte"] = mean_scores(uni)["bits_per_byte"]
        table["beats_unigram_all"] = all(r["beats_unigram"] for r in rows.values())
    return table


def evaluate_folder(
    model_path: str, corpus: str | list[str] | None = "builtin", langs: Sequence[str] | None = None,
    settings: EvalSettings | None = None, dtype: str | None = None, progress: str = "off",
    device_map: str | dict | None = None,
) -> dict[str, Any]:
    """`langmoe eval`: load an HF folder ('builtin' = the shipped tiny base) and evaluate it on a corpus, in fp32
    unless `dtype` ("auto": the folder's own), on the GPU when there is one or where `device_map` places it."""

    settings = settings or EvalSettings()
    model, tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device_map=device_map)
    if torch.cuda.is_available() and device_map is None:
        model.to("cuda")
    opened = open_corpus(corpus)
    chosen = choose_languages(opened, langs)
    table = run_eval(model, tokenizer, opened, chosen, settings, progress=progress)
    table["model"] = str(model_path)
    table["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")  # what the scores were computed in
    table["corpus"] = [str(c) for c in corpus] if isinstance(corpus, (list, tuple)) else str(corpus)
    return table
