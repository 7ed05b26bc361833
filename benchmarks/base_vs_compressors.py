"""A base model's test bits per byte next to general-purpose compressors and the unigram model, per language.

Why: a base that does not beat `bz2 -9` on the very text it is scored on (a compressor that sees nothing but that
text) has learned little; every method compared on top of it then measures under-training.

Exactly the same text for every column: per language, the documents of the test split in corpus order, cut at
`--max-chars` characters in total (`langmoe.eval.texts.select_texts`, as `langmoe eval` does). The model
scores them with the project's evaluator (`evaluate_languages`, window 256, stride 128 by default: how the shipped
base was measured); each compressor compresses the documents concatenated (`"".join`, so the bytes compressed are
exactly the bytes scored) in one call. Every column is `bits / UTF-8 bytes of that text`:

- `bz2 -9`: `bz2.compress(data, 9)`;
- `xz -9e`: `lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)` (the .xz container, as the `xz` program writes);
- `zstd --ultra -22`: the `zstandard` module if installed, else the `zstd` program if on PATH, else the column is
  left out with a note;
- `unigram`: the add-one unigram model on the train split (`langmoe.eval.unigram.unigram_bpb`).

    python benchmarks/base_vs_compressors.py --model builtin --out benchmarks/results/base_vs_compressors.md
    python benchmarks/base_vs_compressors.py --model /path/to/hf-folder --json results.json --langs en de fr
    python benchmarks/base_vs_compressors.py --model DIR --corpus /path/to/corpus-folder --max-chars 50000
"""

from __future__ import annotations

import argparse
import bz2
import json
import lzma
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from langmoe.errors import LangmoeError

Compressor = Callable[[bytes], int]


def bz2_size(data: bytes) -> int:
    """Bytes of `bz2 -9` output."""
    return len(bz2.compress(data, 9))


def xz_size(data: bytes) -> int:
    """Bytes of `xz -9e` output."""
    return len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def zstd_compressor() -> tuple[Compressor | None, str]:
    """(`zstd --ultra -22` size function or None, how it is computed or why it is missing)."""
    try:
        import zstandard  # type: ignore[import-not-found]

        def size(data: bytes) -> int:
            return len(zstandard.ZstdCompressor(level=22).compress(data))

        return size, f"zstd: Python zstandard {zstandard.__version__}, level 22"
    except ImportError:
        pass
    exe = shutil.which("zstd")
    if exe is None:
        return None, "zstd column skipped: neither the zstandard module nor the zstd program is available"

    def size_cli(data: bytes) -> int:
        out = subprocess.run([exe, "--ultra", "-22", "-q", "-c"], input=data, capture_output=True, check=True)
        return len(out.stdout)

    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip(" *\n")
    return size_cli, f"zstd: the program, `zstd --ultra -22 -c` ({version})"


def compressed_bpb(texts: Sequence[str], size: Compressor) -> float:
    """Compressed size in bits of the concatenated texts / their UTF-8 bytes."""
    data = "".join(texts).encode("utf-8")
    if not data:
        raise LangmoeError("no text to compress: choose languages with text in this split")
    return size(data) * 8 / len(data)


def compressors() -> tuple[dict[str, Compressor], list[str]]:
    """The compressor columns and notes on how they are computed."""
    cols: dict[str, Compressor] = {"bz2 -9": bz2_size, "xz -9e": xz_size}
    notes = ["bz2: Python bz2.compress(data, 9)", "xz: Python lzma.compress(data, preset=9 | PRESET_EXTREME)"]
    zsize, note = zstd_compressor()
    if zsize is not None:
        cols["zstd --ultra -22"] = zsize
    notes.append(note)
    return cols, notes


def measure(
    model_path: str = "builtin", langs: Sequence[str] | None = None, max_chars: int = 20_000, split: str = "test",
    window: int = 256, stride: int = 128, batch_size: int = 8, corpus: str = "builtin",
) -> dict:
    """Per-language bits per byte of the model, each compressor and the unigram model, plus means and win counts."""
    from langmoe.data.corpus import choose_languages, open_corpus
    from langmoe.eval.perplexity import evaluate_languages
    from langmoe.eval.texts import select_texts
    from langmoe.eval.unigram import unigram_bpb
    from langmoe.models.base import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_path)
    if torch.cuda.is_available():
        model.to("cuda")
    opened = open_corpus(corpus)
    chosen = choose_languages(opened, langs)
    t0 = time.perf_counter()
    ours = evaluate_languages(model, tokenizer, opened, chosen, split=split, window=window, stride=stride,
                              max_chars_per_lang=max_chars, batch_size=batch_size, skip_empty=True)
    model_s = time.perf_counter() - t0
    chosen = [x for x in chosen if x in ours]
    uni = unigram_bpb(tokenizer, opened, chosen, split=split, max_chars_per_lang=max_chars,
                      vocab_size=model.config.vocab_size)
    cols, notes = compressors()
    rows: dict[str, dict] = {}
    for lang in chosen:
        texts = select_texts(opened, lang, split, max_chars)
        nbytes = len("".join(texts).encode("utf-8"))
        if nbytes != ours[lang].bytes:  # the same text, or the comparison means nothing
            raise LangmoeError(f"{lang}: compressor text has {nbytes} bytes, the model scored {ours[lang].bytes}")
        row = {"bytes": nbytes, "model": ours[lang].bits_per_byte}
        for name, size in cols.items():
            row[name] = compressed_bpb(texts, size)
        row["unigram"] = uni[lang].bits_per_byte
        rows[lang] = row
    others = [*cols, "unigram"]
    n = len(rows)
    mean = {k: sum(r[k] for r in rows.values()) / n for k in ["model", *others]}
    wins = {k: sum(r["model"] < r[k] for r in rows.values()) for k in others}
    return {
        "model": str(model_path), "corpus": corpus, "split": split, "max_chars": max_chars, "window": window,
        "stride": stride, "langs": rows, "mean": mean, "model_wins": wins, "n_langs": n, "columns": others,
        "notes": notes, "model_eval_seconds": round(model_s, 1),
    }


def to_markdown(res: dict, command: str) -> str:
    cols = res["columns"]
    lines = [
        "# Base vs general-purpose compressors (bits per byte, lower is better)",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
        f"Model `{res['model']}`, corpus `{res['corpus']}`, split `{res['split']}`, first {res['max_chars']:,} "
        f"characters per language; model scored with window {res['window']}, stride {res['stride']}. Every column "
        "is bits / UTF-8 bytes of exactly the same text (the documents concatenated). "
        + "; ".join(res["notes"]) + ".",
        "",
        "| | model | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
        f"| **mean over {res['n_langs']} languages** | **{res['mean']['model']:.3f}** | "
        + " | ".join(f"**{res['mean'][c]:.3f}**" for c in cols) + " |",
        "| languages where the model wins | | " + " | ".join(f"{res['model_wins'][c]} / {res['n_langs']}"
                                                       for c in cols) + " |",
        "",
        "| language | bytes | model | " + " | ".join(cols) + " |",
        "|---|---:|---:|" + "---:|" * len(cols),
    ]
    for lang, row in res["langs"].items():
        cells = []
        for c in cols:
            mark = "" if row["model"] < row[c] else " *"  # * = the model does not beat this column
            cells.append(f"{row[c]:.3f}{mark}")
        lines.append(f"| {lang} | {row['bytes']:,} | {row['model']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: the model does not beat this column on this language.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin", help="'builtin' (the shipped tiny base) or an HF model folder")
    ap.add_argument("--max-chars", type=int, default=20_000, help="characters of test text per language")
    ap.add_argument("--langs", nargs="+", help="languages (default: every language of the corpus)")
    ap.add_argument("--corpus", default="builtin", help="'builtin' or a corpus folder (langmoe.data.corpus)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--json", help="write the JSON result here")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/base_vs_compressors.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        res = measure(args.model, args.langs, args.max_chars, args.split, args.window, args.stride, args.batch_size,
                      args.corpus)
    except LangmoeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = to_markdown(res, command.strip())
    print(md)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
