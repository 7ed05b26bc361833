"""Local lm-evaluation-harness tasks built from a corpus split (default: the built-in test split), no network.

Two task families per language, written as JSONL data + task YAML (`dataset_path: json` with `data_files`):
- `langmoe_bpb_<lang>`: rolling log-likelihood of each document (`loglikelihood_rolling`), reported as
  `bits_per_byte`, `byte_perplexity`, `word_perplexity` (lm-eval's own definitions, whole documents, no context
  across documents);
- `langmoe_cont_<lang>`: continuation multiple choice: the first part of a document, then pick its true next
  segment among segments at the same position of other documents of the same language (`acc`, `acc_norm`).
Groups `langmoe_bpb` and `langmoe_cont` average over the languages written (macro mean).
This module does not import lm_eval: writing tasks needs only the corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from langmoe.errors import LangmoeError
from langmoe.io import write_text

__all__ = ["TASK_PREFIX", "split_text", "task_names", "write_tasks"]

TASK_PREFIX = "langmoe_"
FAMILIES = ("bpb", "cont")


def task_names(langs: list[str], families: tuple[str, ...] = FAMILIES) -> list[str]:
    return [f"{TASK_PREFIX}{fam}_{lang}" for fam in families for lang in langs]


def _snap(text: str, pos: int, window: int = 40) -> int:
    """`pos` moved back to the nearest whitespace within `window` chars (scripts without spaces keep `pos`)."""
    pos = max(0, min(pos, len(text)))
    for i in range(pos, max(0, pos - window), -1):
        if i < len(text) and text[i].isspace():
            return i
    return pos


def _clip(text: str, max_chars: int) -> str:
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[:_snap(text, max_chars)].rstrip() or text[:max_chars]


def split_text(text: str, context_chars: int, segment_chars: int) -> tuple[str, str] | None:
    """(context, next segment) of a document, cut at whitespace where the script has it; the segment keeps its
    leading whitespace so that context + segment is the original text. None when the document is too short."""
    cut = _snap(text, min(context_chars, len(text) // 2))
    end = _snap(text, cut + segment_chars)
    if end <= cut + 1:
        end = min(len(text), cut + segment_chars)
    context, segment = text[:cut], text[cut:end]
    if len(context.strip()) < 20 or len(segment.strip()) < 5:
        return None
    return context, segment


def _mc_rows(texts: list[str], choices: int, context_chars: int, segment_chars: int, seed: int) -> list[dict]:
    pairs = [p for p in (split_text(t, context_chars, segment_chars) for t in texts) if p is not None]
    k = min(choices, len(pairs))
    if k < 2:
        return []
    rng = random.Random(seed)
    rows = []
    for i, (context, segment) in enumerate(pairs):
        others = rng.sample([j for j in range(len(pairs)) if j != i], k - 1)
        options = [segment] + [pairs[j][1] for j in others]
        order = list(range(k))
        rng.shuffle(order)
        rows.append({"context": context, "choices": [options[o] for o in order], "label": order.index(0)})
    return rows


def _dump_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_tasks(
    out_dir: str | Path,
    corpus: str = "builtin",
    langs: list[str] | None = None,
    split: str = "test",
    max_docs: int = 100,
    max_chars: int = 2000,
    choices: int = 4,
    context_chars: int = 400,
    segment_chars: int = 120,
    seed: int = 0,
) -> list[str]:
    """Write data + YAML for every language into `out_dir` (an lm-eval `--include_path`); returns task names.

    max_docs: documents per language (first ones of the split); max_chars: a bpb document is cut to this many
    characters at whitespace (0 = whole documents).
    """
    from langmoe.data.corpus import choose_languages, open_corpus

    if max_docs < 1 or choices < 2:
        raise LangmoeError(f"max_docs must be >= 1 and choices >= 2, got {max_docs} and {choices}")
    src = open_corpus(corpus)
    langs = choose_languages(src, langs, label=f"corpus {corpus}")
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {fam: [] for fam in FAMILIES}
    for lang in langs:
        texts = []
        for doc in src.iter_documents(lang, split):
            if doc.text.strip():
                texts.append(doc.text)
            if len(texts) >= max_docs:
                break
        if not texts:
            raise LangmoeError(f"corpus {corpus} has no {split!r} documents for {lang}: choose another split or language")
        meta = {"corpus": corpus, "split": split, "lang": lang}
        _write_task(out, "bpb", lang, [{"text": _clip(t, max_chars)} for t in texts], {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{text}}",
            "metric_list": [{"metric": m, "aggregation": agg, "higher_is_better": False} for m, agg in (
                ("bits_per_byte", "bits_per_byte"), ("byte_perplexity", "weighted_perplexity"),
                ("word_perplexity", "weighted_perplexity"))],
        }, meta)
        written["bpb"].append(lang)
        rows = _mc_rows(texts, choices, context_chars, segment_chars, seed)
        if rows:
            _write_task(out, "cont", lang, rows, {
                "output_type": "multiple_choice",
                "doc_to_text": "{{context}}",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{label}}",
                "target_delimiter": "",  # each choice starts with the text's own whitespace (if the script has it)
                "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                for m in ("acc", "acc_norm")],
            }, {**meta, "choices": min(choices, len(rows))})
            written["cont"].append(lang)
    metric = {"bpb": ("bits_per_byte", False), "cont": ("acc", True)}
    for fam, done in written.items():
        if not done:
            continue
        name, _ = metric[fam]
        _write_yaml(out / f"{TASK_PREFIX}{fam}.yaml", {
            "group": f"{TASK_PREFIX}{fam}",
            "task": [f"{TASK_PREFIX}{fam}_{lang}" for lang in done],
            "aggregate_metric_list": [{"metric": name, "aggregation": "mean", "weight_by_size": False}],
            "metadata": {"version": 1.0},
        })
    return [f"{TASK_PREFIX}{fam}_{lang}" for fam, done in written.items() for lang in done]


def _write_task(out: Path, family: str, lang: str, rows: list[dict], fields: dict, meta: dict) -> None:
    """One task: its documents as `data/<family>_<lang>.jsonl` and its YAML reading them as the test split."""
    data = out / "data" / f"{family}_{lang}.jsonl"
    _dump_jsonl(data, rows)
    _write_yaml(out / f"{TASK_PREFIX}{family}_{lang}.yaml", {
        "task": f"{TASK_PREFIX}{family}_{lang}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        **fields,
        "metadata": {"version": 1.0, "langmoe": meta},
    })


def _write_yaml(path: Path, obj: dict) -> None:
    write_text(path, yaml.safe_dump(obj, allow_unicode=True, sort_keys=False))
