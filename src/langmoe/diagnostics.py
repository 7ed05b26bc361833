"""Warnings a researcher needs before trusting a number: each is one sentence, printed by the CLI as one
`langmoe <cmd>: warning: ...` line and stored in eval JSON under "warnings".

* a language scored worse than a uniform guess over bytes (8 bits per byte): the model has never seen its script;
* a corpus file mostly written in another script than its language's (wrong file, wrong code, mojibake);
* a held-out split too small to measure (raise the held-out share: `test_frac` in the folder's corpus.yaml);
* a macro-mean perplexity dominated by one language (compare per-language numbers, or bits per byte).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from langmoe.data.corpus import FolderCorpus, MixedCorpus
from langmoe.data.languages import SCRIPTS, script_share

UNIFORM_BITS_PER_BYTE = 8.0
MIN_SCORED_DOCS = 5
MIN_SCORED_BYTES = 2000
MIN_SCRIPT_SHARE = 0.5
DOMINANT_SHARE = 0.5


class LangmoeWarning(UserWarning):
    """A result that is computed correctly but may mislead."""


def eval_warnings(table: Mapping[str, Any], split: str | None = None) -> list[str]:
    """Warnings about a per-language eval table ({"langs": {code: {docs, bytes, ppl, bits_per_byte}}, ...})."""
    langs: Mapping[str, Mapping[str, Any]] = table.get("langs", {}) or {}
    split = split or str(table.get("split") or (table.get("settings") or {}).get("split") or "held-out")
    out: list[str] = []
    for code, r in langs.items():
        bpb = r.get("bits_per_byte")
        if isinstance(bpb, (int, float)) and bpb > UNIFORM_BITS_PER_BYTE:
            out.append(f"language '{code}': {bpb:.2f} bits per byte is worse than a uniform guess over bytes "
                       f"({UNIFORM_BITS_PER_BYTE:g}): the model has likely never seen its script")
        docs, nbytes = r.get("docs"), r.get("bytes")
        if (isinstance(docs, int) and docs < MIN_SCORED_DOCS) or (isinstance(nbytes, int) and nbytes < MIN_SCORED_BYTES):
            out.append(f"language '{code}': only {docs} documents ({nbytes} bytes) scored in the {split} split: too "
                       "little to measure; add text or raise the held-out share (test_frac in the corpus folder's "
                       "corpus.yaml)")
    ppl = {c: float(r["ppl"]) for c, r in langs.items() if isinstance(r.get("ppl"), (int, float))}
    out += dominance_warnings(ppl)
    return out


def dominance_warnings(ppl: Mapping[str, float], what: str = "mean perplexity") -> list[str]:
    """One language contributing more than half of an unweighted mean over >= 3 languages."""
    total = sum(ppl.values())
    if len(ppl) < 3 or not total > 0:
        return []
    code, top = max(ppl.items(), key=lambda kv: kv[1])
    share = top / total
    if share <= DOMINANT_SHARE:
        return []
    return [f"language '{code}' contributes {share:.0%} of the {what} over {len(ppl)} languages: compare "
            "per-language scores (or the mean bits per byte) rather than the mean"]


THIN_SPLIT_CHARS = 5_000  # below this a held-out split gives noisy per-language scores (a few windows)


def thin_splits(stats: Any, min_chars: int = THIN_SPLIT_CHARS) -> dict[str, dict[str, int]]:
    """{language: {split: characters}} for every valid/test split with text but fewer than `min_chars`
    characters, from `langmoe.data.corpus.corpus_stats` (an empty split is reported where it is used)."""
    out: dict[str, dict[str, int]] = {}
    for r in stats.languages:
        thin = {s: r.splits[s].chars for s in ("valid", "test") if 0 < r.splits[s].chars < min_chars}
        if thin:
            out[r.code] = thin
    return out


def thin_split_warnings(thin: dict[str, dict[str, int]], min_chars: int = THIN_SPLIT_CHARS) -> list[str]:
    """One line per language of `thin_splits(...)`."""
    return [f"{code}: thin {', '.join(f'{s} split ({n:,} characters)' for s, n in splits.items())}: fewer than "
            f"{min_chars:,}, so its held-out scores are noisy; add text or read its numbers with care"
            for code, splits in thin.items()]


def corpus_warnings(corpus: Any, langs: Iterable[str] | None = None, sample_chars: int = 20_000) -> list[str]:
    """A user corpus file whose sampled text is mostly in another script than its language's."""

    if isinstance(corpus, MixedCorpus):  # each folder source on its own
        want = list(langs) if langs else None
        out = []
        for _, part in corpus.parts:
            mine = [x for x in want if x in part.languages()] if want else None
            if mine is None or mine:
                out += corpus_warnings(part, mine, sample_chars)
        return out
    if not isinstance(corpus, FolderCorpus):
        return []  # the built-in corpus is filtered by script when it is built
    have = set(corpus.languages())
    out = []
    for code in [x for x in (langs or corpus.languages()) if x in have]:
        lang = corpus.language(code)
        if lang.script not in SCRIPTS:
            continue
        text = []
        n = 0
        for _, doc in corpus._iter_all(code):
            text.append(doc.text)
            n += len(doc.text)
            if n >= sample_chars:
                break
        share = script_share("".join(text)[:sample_chars], lang.script)
        if text and share < MIN_SCRIPT_SHARE:
            out.append(f"{corpus._where(code)}: only {share:.0%} of its letters are in {lang.script} script, the "
                       f"script of {lang.name} ('{code}'): check the file and its language code")
    return out


def report_warnings(messages: Iterable[str]) -> list[str]:
    """Emit each message as a LangmoeWarning (the CLI prints one line each) and return them as a list."""
    out = list(messages)
    for m in out:
        warnings.warn(m, LangmoeWarning, stacklevel=2)
    return out


def summary_warnings(summary: Mapping[str, Any]) -> list[str]:
    """`eval_warnings` for every system of a run summary (`summary.json`), each prefixed with the system."""
    out = []
    for system, row in (summary.get("systems") or {}).items():
        langs = {x: {"ppl": p, "bits_per_byte": (row.get("bpb") or {}).get(x)} for x, p in (row.get("ppl") or {}).items()}
        out += [f"{system}: {w}" for w in eval_warnings({"langs": langs})]
    return out
