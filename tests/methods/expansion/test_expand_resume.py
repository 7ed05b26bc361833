"""`langmoe expand --save-every`: a run killed (a real SIGKILL) inside stage 1, then the same command again, ends
with the weights and numbers of an uninterrupted run; the kill leaves nothing in the temp directory, only OUT.work
beside --out, which the rerun resumes and then removes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from expansion_world import fast_config
from safetensors.torch import load_file

import langmoe.methods.expansion.stages as S
from langmoe.cli import main

FAST = ["--method", "moe_lpr", "--new", "es,it", "--old", "en,de", "--stage1-steps", "5", "--stage2-steps", "3",
        "--block-len", "16", "--micro-batch-size", "4", "--max-train-tokens", "1500", "--replay-share", "0.5",
        "--threads", "1", "--eval-window", "32", "--eval-stride", "16", "--eval-max-chars", "300",
        "--save-every", "2"]

# the first training source (stage 1) kills its own process when asked for step 4 (steps 1-3 done, checkpoint at 2)
_KILL = """
import os, signal, sys
import langmoe.methods.expansion.stages as S

real = S.maybe_fail
calls = []

class KillAt:
    def __init__(self, source):
        self.source = source

    def get(self, step, micro, rank=0, world=1):
        if step >= 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.source.get(step, micro, rank, world)

def maybe_fail(source, fail_at):
    calls.append(1)
    return KillAt(source) if len(calls) == 1 else real(source, fail_at)

S.maybe_fail = maybe_fail
from langmoe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _argv(world: dict, out: Path) -> list[str]:
    return ["expand", "--model", world["model"], "--corpus", world["corpus"], "--out", str(out), *FAST]


def _weights(folder: Path) -> dict:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {k: v for f in files for k, v in load_file(str(f)).items()}


@pytest.mark.slow
def test_sigkill_in_stage1_then_rerun_is_exact(tmp_path, capsys, monkeypatch):
    world = fast_config(tmp_path)
    ref_out, out = tmp_path / "ref" / "model", tmp_path / "killed" / "model"
    assert main(_argv(world, ref_out)) == 0
    assert not (tmp_path / "ref" / "model.work").exists(), "the default run folder stays after a finished run"

    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(private_tmp),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _KILL, *_argv(world, out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    work = out.with_name("model.work")
    assert not out.exists() and work.is_dir()
    assert not list(private_tmp.iterdir()), "a killed expand left files in the temp directory"
    assert list(work.rglob("checkpoints/step-*")), "no stage-1 checkpoint to resume from"

    starts = []
    real_train = S.train

    def spy(*a, **kw):
        res = real_train(*a, **kw)
        starts.append(res.start_step)
        return res

    monkeypatch.setattr(S, "train", spy)
    capsys.readouterr()
    assert main(_argv(world, out)) == 0
    assert starts == [2, 0], f"stage 1 did not resume from its step-2 checkpoint: {starts}"
    said = capsys.readouterr().out
    assert "resuming the earlier run" in said
    assert not work.exists(), "the default run folder stays after the rerun finished"
    ref, got = _weights(ref_out), _weights(out)
    assert ref.keys() == got.keys()
    assert all((ref[k] == got[k]).all() for k in ref), [k for k in ref if not (ref[k] == got[k]).all()]
    rec_ref, rec = (json.loads((p / "expansion.json").read_text()) for p in (ref_out, out))
    for key in ("before", "after", "routing"):
        assert rec[key] == rec_ref[key], key


def test_save_every_negative_is_one_line(tmp_path, capsys):
    world = fast_config(tmp_path)
    out = tmp_path / "out"
    argv = _argv(world, out)
    argv[argv.index("--save-every") + 1] = "-1"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--save-every must be >= 0" in err[0], err
    assert not out.exists() and not out.with_name("out.work").exists()


def test_input_refused_after_setup_leaves_no_work_folder(tmp_path, capsys):
    """--top-k-cls larger than the model's layers is found by the plan, after the run folder was set up: the
    default OUT.work this call made (nothing trained in it) is removed with the refusal."""
    world = fast_config(tmp_path)
    out = tmp_path / "out"
    argv = ["expand", "--method", "layermoe", "--model", world["model"], "--corpus", world["corpus"], "--out",
            str(out), *FAST[2:], "--top-k-cls", "3"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "larger than the model's 2 layers" in err[0], err
    assert not out.exists() and not out.with_name("out.work").exists()
