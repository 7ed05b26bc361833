import pytest

from langmoe.errors import LangmoeError
from langmoe.io import read_json
from langmoe.pipeline.runner import StageRunner, atomic_dir, stage_key


def test_stage_runs_once_and_is_cached(tmp_path):
    calls = []

    def fn(d):
        calls.append(d)
        (d / "out.txt").write_text("x")
        return {"value": 1.5, "n": [1, 2]}

    r1 = StageRunner(tmp_path)
    assert r1.run("a", {"x": 1}, fn) == {"value": 1.5, "n": [1, 2]}
    r2 = StageRunner(tmp_path)
    assert r2.run("a", {"x": 1}, fn) == {"value": 1.5, "n": [1, 2]}
    assert len(calls) == 1 and r2.cached == ["a"] and r2.ran == []
    rec = read_json(tmp_path / "stages" / "a" / "stage.json")
    assert rec["key"] == stage_key("a", {"x": 1})


def test_changed_config_or_dependency_recomputes(tmp_path):
    seen = []
    r = StageRunner(tmp_path)
    r.run("a", {"x": 1}, lambda d: seen.append("a1") or {})
    r.run("b", {}, lambda d: seen.append("b1") or {}, deps=["a"])
    r = StageRunner(tmp_path)
    r.run("a", {"x": 2}, lambda d: seen.append("a2") or {})  # config changed
    r.run("b", {}, lambda d: seen.append("b2") or {}, deps=["a"])  # same config, upstream changed
    assert seen == ["a1", "b1", "a2", "b2"]


def test_killed_stage_keeps_its_folder_for_resume(tmp_path):
    r = StageRunner(tmp_path)

    def boom(d):
        (d / "checkpoint").write_text("step 3")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        r.run("t", {"k": 1}, boom)
    assert r.done("t") is None
    got = r.run("t", {"k": 1}, lambda d: {"resumed_from": (d / "checkpoint").read_text()})
    assert got == {"resumed_from": "step 3"}
    # a different config wipes the half-done folder
    with pytest.raises(RuntimeError):
        r.run("u", {"k": 1}, boom)
    assert r.run("u", {"k": 2}, lambda d: {"left": (d / "checkpoint").exists()}) == {"left": False}


def test_missing_dependency_is_an_error(tmp_path):
    with pytest.raises(LangmoeError, match="depends on"):
        StageRunner(tmp_path).run("b", {}, lambda d: {}, deps=["a"])


def test_atomic_dir(tmp_path):
    dest = tmp_path / "model"
    with atomic_dir(dest) as t:
        (t / "w").write_text("1")
    with pytest.raises(ValueError), atomic_dir(dest) as t:
        (t / "w").write_text("2")
        raise ValueError
    assert (dest / "w").read_text() == "1" and not (tmp_path / ".tmp-model").exists()
