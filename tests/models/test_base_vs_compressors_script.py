"""`benchmarks/base_vs_compressors.py --model DIR` on a saved tiny model and corpus folder: every column is measured
on the same text, the model column is the project's evaluator, the compressor columns are hand-recomputed."""

import bz2
import json
import lzma
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from script_loader import load_script
from tiny_world import make_base, make_corpus  # noqa: E402

from langmoe.data.corpus import open_corpus  # noqa: E402
from langmoe.errors import LangmoeError  # noqa: E402
from langmoe.eval.perplexity import evaluate_languages
from langmoe.eval.texts import select_texts  # noqa: E402
from langmoe.eval.unigram import unigram_bpb  # noqa: E402
from langmoe.models.base import load_model_and_tokenizer  # noqa: E402


def _bench():
    return load_script("benchmarks/base_vs_compressors.py")


def test_model_folder_and_corpus_folder(tmp_path):
    torch.set_num_threads(1)
    base, corpus_dir = make_base(tmp_path / "base"), make_corpus(tmp_path / "corpus")
    bench = _bench()
    out_md, out_json = tmp_path / "r.md", tmp_path / "r.json"
    rc = bench.main(["--model", str(base), "--corpus", str(corpus_dir), "--langs", "en", "de", "--max-chars", "300",
                     "--window", "32", "--stride", "16", "--out", str(out_md), "--json", str(out_json)])
    assert rc == 0
    res = json.loads(out_json.read_text())
    corpus = open_corpus(str(corpus_dir))
    model, tok = load_model_and_tokenizer(base)
    ours = evaluate_languages(model, tok, corpus, ["en", "de"], window=32, stride=16, max_chars_per_lang=300)
    uni = unigram_bpb(tok, corpus, ["en", "de"], max_chars_per_lang=300, vocab_size=model.config.vocab_size)
    for lang in ("en", "de"):
        data = "".join(select_texts(corpus, lang, "test", 300)).encode("utf-8")
        row = res["langs"][lang]
        assert row["bytes"] == len(data) == ours[lang].bytes
        assert row["model"] == pytest.approx(ours[lang].bits_per_byte, rel=1e-9)
        assert row["unigram"] == pytest.approx(uni[lang].bits_per_byte, rel=1e-12)
        assert row["bz2 -9"] == len(bz2.compress(data, 9)) * 8 / len(data)
        assert row["xz -9e"] == len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) * 8 / len(data)
    cols = res["columns"]
    for c in cols:
        assert res["mean"][c] == pytest.approx((res["langs"]["en"][c] + res["langs"]["de"][c]) / 2)
        assert res["model_wins"][c] == sum(res["langs"][x]["model"] < res["langs"][x][c] for x in ("en", "de"))
    md = out_md.read_text()
    assert md.splitlines()[4].strip().startswith("python benchmarks/base_vs_compressors.py --model")
    assert "| en |" in md and "| de |" in md and "mean over 2 languages" in md


def test_unknown_language_is_one_line_error(tmp_path, capsys):
    base, corpus_dir = make_base(tmp_path / "base"), make_corpus(tmp_path / "corpus", langs=("en",))
    assert _bench().main(["--model", str(base), "--corpus", str(corpus_dir), "--langs", "xx"]) == 2
    assert "not in the corpus" in capsys.readouterr().err
    with pytest.raises(LangmoeError, match="no text to compress"):
        _bench().compressed_bpb([""], _bench().bz2_size)
