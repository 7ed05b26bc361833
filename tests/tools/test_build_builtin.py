"""Builder 2.0 pieces of tools/build_builtin.py: CJK line joins, label lists, holes, English sentences, split rule."""

import gzip
import json
from pathlib import Path

import pytest
from script_loader import load_script

from langmoe.errors import LangmoeError

ROOT = Path(__file__).resolve().parents[2]


def _load_builder():
    return load_script("tools/build_builtin.py")


bb = _load_builder()


# --- CJK line joins ---------------------------------------------------------------------------------------


def test_join_cjk_spaces_removes_line_join_artefacts():
    assert bb.join_cjk_spaces("オリジ ナル") == "オリジナル"
    assert bb.join_cjk_spaces("ただし、 お使いの") == "ただし、お使いの"
    assert bb.join_cjk_spaces("并不做 真正的 更新") == "并不做真正的更新"
    assert bb.join_cjk_spaces("ＡＢ　ｃ ＤＥ") == "ＡＢ　ｃＤＥ"  # full-width forms count as CJK


def test_join_cjk_spaces_keeps_spaces_next_to_latin_and_digits():
    assert bb.join_cjk_spaces("使用 する Linux") == "使用する Linux"
    assert bb.join_cjk_spaces("Linux を 使う") == "Linux を使う"
    assert bb.join_cjk_spaces("第 4 章 インストール") == "第 4 章インストール"
    assert bb.join_cjk_spaces("行 1\n行 2") == "行 1\n行 2"  # line breaks are not touched
    assert bb.join_cjk_spaces("plain English text") == "plain English text"


# --- label lists ------------------------------------------------------------------------------------------


def test_is_label():
    assert bb.is_label("Text Boundaries")
    assert bb.is_label("텍스트 색상 변경")
    assert not bb.is_label("Choose Format - Character.")
    assert not bb.is_label("色を変更します。")
    assert not bb.is_label("यह एक वाक्य है।")
    assert not bb.is_label("a\nb")
    assert not bb.is_label("x" * 81)


def test_drop_label_runs_drops_a_label_list_and_keeps_prose():
    label_list = ["텍스트 입력과 서식 지정", "임의 위치에 텍스트 입력", "키보드를 통한 탐색과 선택", "텍스트 색상 변경"]
    prose = "셀 내용을 다중 셀로 확장하려면 확장하려는 셀을 선택하십시오."
    assert bb.drop_label_runs(label_list) == []
    assert bb.drop_label_runs([prose] + label_list + [prose]) == [prose, prose]
    # a heading or an option name before its description is not a list
    heading_then_text = ["Unique entries", "Replaces identical index entries with a single entry.",
                         "Case sensitive", "Distinguishes between uppercase and lowercase letters."]
    assert bb.drop_label_runs(heading_then_text) == heading_then_text
    assert bb.drop_label_runs(["a", "b", prose]) == ["a", "b", prose]  # two labels are not a run


# --- holes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("par", [
    "For more information, see .",
    "Смотрите .",
    "Klicken Sie auf das Symbol , um die Tastatur zu öffnen.",
    "有关您可以设置的权限类型的详细信息，请参阅下面的 和 。",
    "Choose the entry in ( ) and press Enter.",
    "Select “” to open the dialog.",
    "@@@개체의 테두리 지정",
    "서식 - 을 선택하십시오.",
])
def test_has_hole(par):
    assert bb.has_hole(par)


@pytest.mark.parametrize("par", [
    "The msgbox() function shows a dialog.",
    "The decimal point (.) is always a full stop in Basic code.",
    "Voir systemd.mount(5) : montage automatique.",
    "Ein ganz normaler Satz, mit Komma.",
    "이 함수는 셀 내용에 따라 스타일을 지정합니다.",
    "Nevezze át a mappát egy . beszúrásával a nevének elejére.",  # a literal dot
])
def test_has_no_hole(par):
    assert not bb.has_hole(par)


# --- English sentences ------------------------------------------------------------------------------------


def test_english_sentence_inside_a_translated_paragraph():
    mixed = "Dette er en dansk sætning. You will also have to edit the file to actually enable the service."
    assert bb.english_sentence(mixed) == "You will also have to edit the file to actually enable the service."
    assert bb.english_sentence("Dette er en dansk sætning om filer og mapper, som man kan åbne.") is None
    assert bb.english_sentence("Open Settings.") is None  # short UI names inside a sentence stay


# --- split rule -------------------------------------------------------------------------------------------


def _doc(i, split, n=1000):
    return {"id": f"xx:s:{i}", "source": "s", "split": split, "text": "a" * n}


def test_top_up_test_moves_valid_only_and_keeps_one_valid():
    docs = [_doc(0, "train", 9000), _doc(1, "test", 1000)] + [_doc(i, "valid", 1500) for i in range(2, 7)]
    assert bb.top_up_test(docs, min_chars=5000) is None
    test = [d for d in docs if d["split"] == "test"]
    assert sum(len(d["text"]) for d in test) >= 5000
    assert sum(d["split"] == "valid" for d in docs) >= 1
    assert docs[0]["split"] == "train"


def test_top_up_test_reports_thin_languages():
    docs = [_doc(0, "train", 9000), _doc(1, "train", 9000), _doc(2, "test", 500), _doc(3, "valid", 800),
            _doc(4, "valid", 700)]
    reason = bb.top_up_test(docs, min_chars=5000)
    assert reason and "1 valid doc(s) left" in reason
    assert [d["split"] for d in docs] == ["train", "train", "test", "valid", "test"] or \
        [d["split"] for d in docs] == ["train", "train", "test", "test", "valid"]


def test_ensure_splits_never_moves_previous_train_docs():
    docs = [_doc(i, "train") for i in range(4)]
    bb._ensure_splits(docs, frozenset({"xx:s:0", "xx:s:1"}))
    assert [d["split"] for d in docs[:2]] == ["train", "train"]
    assert sorted(d["split"] for d in docs[2:]) == ["test", "valid"]
    with pytest.raises(LangmoeError, match="previous release's train split"):
        bb._ensure_splits([_doc(i, "train") for i in range(3)], frozenset({"xx:s:0", "xx:s:1", "xx:s:2"}))


def test_read_previous_splits_from_folder_and_id_list(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = [_doc(0, "train"), _doc(1, "valid"), _doc(2, "test")]
    (folder / "xx.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    ids = tmp_path / "ids.txt.gz"
    ids.write_bytes(gzip.compress(b"xx:s:1\nxx:s:9\n"))
    prev = bb.read_previous_splits([folder, ids])
    assert prev == {"xx:s:0": "train", "xx:s:1": "train", "xx:s:2": "test", "xx:s:9": "train"}  # train wins
    with pytest.raises(LangmoeError, match="no such corpus folder"):
        bb.read_previous_splits([tmp_path / "missing"])


def test_build_language_keeps_previous_train_out_of_valid_and_test(monkeypatch):
    """A document of the previous train split stays train even when its key now hashes to test."""
    items = [bb.Item("de", "src", f"k{i}", Path(f"/nonexistent/{i}"), "fortune") for i in range(40)]
    text = {it.id: f"Dies ist ein deutscher Absatz Nummer {i} mit genug Buchstaben für den Filter. " * 4
            for i, it in enumerate(items)}
    monkeypatch.setattr(bb, "extract_paragraphs", lambda it: [text[it.id]])
    held_out = [it for it in items if bb.split_of(it.key) != "train"]
    assert held_out
    previous = {it.id: "train" for it in held_out}
    docs, thin = bb.build_language("de", items, previous=previous, stable=True)
    assert all(d["split"] == "train" for d in docs if d["id"] in {it.id for it in held_out})
    assert thin is None or isinstance(thin, str)


def test_v1_train_id_list_is_committed_and_matches_the_manifest():
    manifest = json.loads((ROOT / "src/langmoe/data/builtin/manifest.json").read_text("utf-8"))
    assert manifest["v1_train_ids"] == bb.v1_train_digest()
    assert manifest["v1_train_ids"]["count"] > 10_000
