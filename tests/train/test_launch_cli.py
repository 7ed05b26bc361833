"""The documented multi-process commands, run for real on CPU: `torchrun ... -m langmoe train` and
`accelerate launch --multi_gpu ... -m langmoe train` give one gloo-DDP run whose weights equal a 1-process run with
twice the micro-batch (the sampler draws one global batch per step and slices it by rank, so the data agree).
Unsynchronised processes would each train on half of the batch and end with different weights."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from launch_fixtures import BIN, FSDP_YAML, load_weights, run, write_corpus, write_model

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="gloo launch test on POSIX only"),
    pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo"),
]

STEPS = 3


def _train_args(model, corpus, out, batch):
    return ["-m", "langmoe", "train", "--model", str(model), "--corpus", str(corpus), "--out", str(out),
            "--steps", str(STEPS), "--batch-size", str(batch), "--block-len", "16", "--lr", "0.05",
            "--warmup-ratio", "0.34", "--log-every", "1", "--save-every", str(STEPS), "--threads", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    model = write_model(root / "model")
    corpus = write_corpus(root / "corpus")
    ref = root / "single"
    res = run([sys.executable, *_train_args(model, corpus, ref, 4)], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, model, corpus, ref


def _check_same_run(out, ref):
    got, want = load_weights(out), load_weights(ref)
    assert set(got) == set(want)
    start = load_weights(out.parent / "model")
    assert any(not torch.equal(start[k], want[k]) for k in want), "training changed nothing"
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    rows = [json.loads(x) for x in (out / "train" / "log.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # rank 0 logged once per step
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows], rel=1e-4)
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in ref_rows]
    record = json.loads((out / "train.json").read_text())
    assert record["environment"]["processes"] == 2
    assert json.loads((ref / "train.json").read_text())["environment"]["processes"] == 1
    ckpt = out / "train" / "checkpoints" / f"step-{STEPS}"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()


def test_torchrun_two_cpu_processes_equal_one_with_twice_the_batch(world):
    root, model, corpus, ref = world
    out = root / "torchrun"
    res = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2",
               *_train_args(model, corpus, out, 2)], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_same_run(out, ref)
    assert res.stdout.count("saved to") == 1  # only the main process reports


def test_accelerate_launch_two_cpu_processes_equal_one_with_twice_the_batch(world):
    root, model, corpus, ref = world
    out = root / "accelerate"
    res = run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               *_train_args(model, corpus, out, 2)], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_same_run(out, ref)


@pytest.mark.slow
def test_accelerate_launch_fsdp_config_trains_the_same_model_and_resumes(world):
    """`accelerate launch --config_file fsdp.yaml -m langmoe train`: FSDP2 over gloo; the gathered weights are
    saved as a plain folder equal to the 1-process run; rerunning resumes from the sharded checkpoint (no-op)."""
    root, model, corpus, ref = world
    (root / "fsdp.yaml").write_text(FSDP_YAML)
    out = root / "fsdp"
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(root / "fsdp.yaml"),
           *_train_args(model, corpus, out, 2)]
    res = run(cmd, cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_same_run(out, ref)
    first = load_weights(out)
    res = run(cmd, cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    again = load_weights(out)
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.slow
def test_accelerate_launch_cpu_flag_is_refused_in_one_line(world):
    """`accelerate launch --cpu --num_processes 2` starts ONE process: refuse instead of training it silently."""
    root, model, corpus, _ = world
    out = root / "cpu-flag"
    res = run([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *_train_args(model, corpus, out, 2)], cwd=root)
    assert res.returncode != 0  # langmoe exits 2; accelerate's launcher turns that into 1
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("langmoe train: error:")]
    assert len(err) == 1 and "--multi_gpu" in err[0] and "torchrun" in err[0], res.stderr[-2000:]
    assert not (out / "model.safetensors").exists()


def test_check_launch_detects_accelerates_single_process_cpu_launch(monkeypatch):
    """The environment `accelerate launch --cpu --num_processes 2` gives its one process (see accelerate's
    prepare_simple_launcher_cmd_env) is refused; a real torchrun/mpirun job (WORLD_SIZE set) is not."""
    from langmoe.errors import LangmoeError
    from langmoe.train.distributed import check_launch

    for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(LangmoeError, match="starts only one process"):
        check_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_launch()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("MASTER_ADDR")  # `accelerate launch --cpu` with one process: fine
    check_launch()


@pytest.mark.slow
def test_torchrun_pretrain_equals_one_process(world):
    """`langmoe pretrain` under torchrun: rank 0 trains the tokenizer and packs first, the others reuse them.
    (Equality needs every rank to hold the same number of scored tokens: block 16 leaves no padded block here;
    with padding DDP averages per-rank means, see docs/training.md.)"""
    root, _, corpus, _ = world

    def args(out, batch):
        return ["-m", "langmoe", "pretrain", "--preset", "tiny", "--corpus", str(corpus), "--out", str(out),
                "--steps", "3", "--vocab-size", "300", "--block-len", "16", "--batch-size", str(batch),
                "--eval-window", "32", "--eval-stride", "16", "--eval-max-chars", "300", "--threads", "1"]

    res = run([sys.executable, *args(root / "pre1", 4)], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *args(root / "pre2", 2)], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("tiny base in") == 1
    one, two = load_weights(root / "pre1"), load_weights(root / "pre2")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    assert json.loads((root / "pre2" / "pretrain.json").read_text())["environment"]["processes"] == 2


@pytest.mark.slow
def test_bad_input_under_torchrun_is_one_line_per_process(world):
    root, model, corpus, _ = world
    args = _train_args(model, corpus, root / "bad", 2)
    res = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *args, "--langs", "xx"], cwd=root)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("langmoe train:")]
    assert lines[0] == "langmoe train: error: languages xx are not in the corpus (it has: de, en)", lines
    assert all("internal error" not in ln for ln in lines)  # the waiting rank says why it stops, in one line
    assert not (root / "bad" / "model.safetensors").exists()
