"""A finished stage that must be recomputed is not deleted with a user's file inside it: one line names the file;
the stage's own files (and a nested stage's) do not count; a killed stage still resumes in its folder."""

import pytest

from langmoe.errors import LangmoeError
from langmoe.io import read_json
from langmoe.pipeline.runner import StageRunner, stage_key


def _write(d, name="out.txt"):
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / name).write_text("x")
    return {}


def test_a_users_file_in_a_finished_stage_is_refused_not_deleted(tmp_path):
    StageRunner(tmp_path).run("a", {"x": 1}, _write)
    d = tmp_path / "stages" / "a"
    assert read_json(d / "stage.json")["files"] == ["KEY", "sub/out.txt"]
    (d / "NOTES.txt").write_text("mine")
    with pytest.raises(LangmoeError, match=r"holds files langmoe did not write \(NOTES.txt\)") as e:
        StageRunner(tmp_path).run("a", {"x": 2}, _write)
    assert "\n" not in str(e.value)
    assert (d / "NOTES.txt").read_text() == "mine"  # nothing deleted
    (d / "NOTES.txt").unlink()
    StageRunner(tmp_path).run("a", {"x": 2}, _write)  # its own files alone: recomputed as before
    assert read_json(d / "stage.json")["key"] == stage_key("a", {"x": 2}) and (d / "sub" / "out.txt").is_file()


def test_nested_stage_files_and_a_cached_rerun_are_not_user_files(tmp_path):
    r = StageRunner(tmp_path)
    r.run("a", {"x": 1}, _write)
    r.run("a/b", {}, lambda d: _write(d, "b.txt"), deps=["a"])
    (tmp_path / "stages" / "a" / "NOTES.txt").write_text("mine")
    StageRunner(tmp_path).run("a", {"x": 1}, _write)  # same key: cached, the note untouched and no complaint
    (tmp_path / "stages" / "a" / "NOTES.txt").unlink()
    StageRunner(tmp_path).run("a", {"x": 3}, _write)  # the nested stage's files are not the user's
    assert not (tmp_path / "stages" / "a" / "b").exists()  # recomputing a stage redoes what was inside it


def test_older_records_without_a_file_list_are_replaced_as_before(tmp_path):
    StageRunner(tmp_path).run("a", {"x": 1}, _write)
    d = tmp_path / "stages" / "a"
    rec = read_json(d / "stage.json")
    rec.pop("files")
    (d / "stage.json").write_text(__import__("json").dumps(rec))
    (d / "extra.bin").write_text("?")
    StageRunner(tmp_path).run("a", {"x": 2}, _write)
    assert not (d / "extra.bin").exists()
