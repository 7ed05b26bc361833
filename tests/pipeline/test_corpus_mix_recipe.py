"""A recipe whose corpus is a list: run_recipe on the tiny world mixes two folders and records, per language, the
sources it read; bad lists are one line."""

import pytest
import torch
import yaml
from tiny_world import make_corpus, tiny_recipe

from langmoe.config import parse_recipe
from langmoe.errors import LangmoeError
from langmoe.io import read_json
from langmoe.pipeline.run import run_recipe


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _chars(path, split):
    """Characters of one split of a tiny-world jsonl file, counted from the file itself."""
    import json

    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return sum(len(r["text"]) for r in rows if r["split"] == split)


def test_recipe_with_a_corpus_list_runs_and_records_sources(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=("base",))
    first = tmp_path / "corpus"
    extra = make_corpus(tmp_path / "extra", langs=("de", "it"), docs=(10, 2, 2), seed=1)  # extends de, adds it
    recipe.update(corpus=[str(first), str(extra)], languages=["en", "de", "it"])
    run_dir = tmp_path / "run"
    summary = run_recipe(recipe, run_dir)
    assert set(summary["systems"]["base"]["ppl"]) == {"en", "de", "it"}  # the mixed-in language is evaluated

    assert yaml.safe_load((run_dir / "config.yaml").read_text())["corpus"] == [str(first), str(extra)]
    rec = read_json(run_dir / "corpus_sources.json")
    assert rec["corpus"] == [str(first), str(extra)]
    langs = rec["languages"]
    assert sorted(langs) == ["de", "en", "it"]
    assert [e["source"] for e in langs["de"]] == [str(first.resolve()), str(extra.resolve())]
    assert [e["source"] for e in langs["en"]] == [str(first.resolve())]
    assert [e["source"] for e in langs["it"]] == [str(extra.resolve())]
    for split in ("train", "valid", "test"):
        assert langs["de"][0]["chars"][split] == _chars(first / "de.jsonl", split)
        assert langs["de"][1]["chars"][split] == _chars(extra / "de.jsonl", split)
        assert langs["it"][0]["chars"][split] == _chars(extra / "it.jsonl", split)

    # the cache key covers every source: a changed second folder is a different input
    from langmoe.data.corpus import corpus_fingerprint, open_corpus

    before = corpus_fingerprint(open_corpus([str(first), str(extra)]))
    make_corpus(tmp_path / "extra", langs=("de", "it"), docs=(11, 2, 2), seed=2)
    assert corpus_fingerprint(open_corpus([str(first), str(extra)])) != before


@pytest.mark.parametrize("corpus, needle", [
    ([], "corpus list is empty"),
    (["builtin", ""], "entry is empty"),
    (["builtin", "builtin"], "once"),
])
def test_bad_corpus_lists_in_a_recipe_are_one_line(tmp_path, corpus, needle):
    with pytest.raises(LangmoeError) as e:
        parse_recipe({"languages": ["en", "de"], "corpus": corpus})
    assert needle in str(e.value) and str(e.value).startswith("recipe: corpus") and "\n" not in str(e.value)


def test_a_missing_folder_in_the_list_stops_the_run_in_one_line(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=("base",))
    recipe["corpus"] = [recipe["corpus"], str(tmp_path / "missing")]
    with pytest.raises(LangmoeError) as e:
        run_recipe(recipe, tmp_path / "run")
    assert "missing does not exist" in str(e.value) and "\n" not in str(e.value)


def test_single_and_one_entry_list_recipes_are_the_same():
    assert parse_recipe({"languages": ["en", "de"], "corpus": ["builtin"]}).corpus == "builtin"
    assert parse_recipe({"languages": ["en", "de"]}).corpus == "builtin"


def test_rerun_on_the_same_corpus_keeps_corpus_sources_without_recounting(tmp_path, monkeypatch):
    import langmoe.data.corpus as corpus_mod

    recipe = tiny_recipe(tmp_path, systems=("base",))
    run_recipe(recipe, tmp_path / "run")
    first = read_json(tmp_path / "run" / "corpus_sources.json")
    assert first["corpus_sha"] and set(first["languages"]) == set(recipe["languages"])

    def recount(*_a, **_k):
        raise AssertionError("corpus_sources recounted on a rerun over the same corpus")

    monkeypatch.setattr(corpus_mod, "corpus_sources", recount)
    run_recipe(recipe, tmp_path / "run")
    assert read_json(tmp_path / "run" / "corpus_sources.json") == first
