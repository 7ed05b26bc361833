"""`langmoe lm-eval`: lm-evaluation-harness on the langmoe-loaded model, offline, on the shipped local tasks.

Checked against an independent computation (the rolling log-likelihood of each document by hand) and across
formats: an upcycled MoE saved natively and its stock export give the same numbers; the dense base (whose MLPs the
perturbed experts no longer equal) gives different ones, so a loader that dropped the experts would be caught."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")

from langmoe.cli import main  # noqa: E402
from langmoe.eval.lm_eval_bridge import run_lm_eval  # noqa: E402
from langmoe.eval.lm_eval_tasks import split_text, write_tasks  # noqa: E402
from langmoe.models.base import load_model_and_tokenizer  # noqa: E402

LIMIT = 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from langmoe.models.export import export_stock
    from langmoe.models.moe_io import save_moe_pretrained
    from langmoe.models.upcycle import upcycle

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lmeval")
    model, tok = load_model_and_tokenizer("builtin")
    upcycle(model, layers=[1, 2], num_experts=4, top_k=2, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make the experts differ from the dense FFN and from each other
        for name, p in model.named_parameters():
            if ".mlp." in name and "router" not in name and "classifier" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    save_moe_pretrained(model, tok, root / "moe")
    export_stock(model, root / "export", tokenizer=tok)
    tasks = root / "tasks"
    write_tasks(tasks, langs=["en"], max_docs=LIMIT, max_chars=600)
    return root, tasks


def _hand_bits_per_byte(folder, tasks) -> float:
    """Σ -log2 p(document | prefix token) / Σ bytes over the first LIMIT documents (each fits in one window)."""
    from langmoe.models.moe_io import load_model_any

    model, tok = load_model_any(folder)
    model.eval()
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll, nbytes = 0.0, 0
    for line in (tasks / "data" / "bpb_en.jsonl").read_text().splitlines()[:LIMIT]:
        text = json.loads(line)["text"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([[prefix, *ids]])
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
        nll -= logp.gather(1, torch.tensor(ids).unsqueeze(1)).sum().item()
        nbytes += len(text.encode("utf-8"))
    return nll / nbytes / math.log(2)


def test_moe_and_export_give_the_same_lm_eval_numbers(folders):
    root, tasks = folders
    got = {name: run_lm_eval(root / name, ["langmoe_bpb_en"], include_path=[tasks], limit=LIMIT)
           for name in ("moe", "export")}
    dense = run_lm_eval("builtin", ["langmoe_bpb_en"], include_path=[tasks], limit=LIMIT)
    bpb = {k: v["results"]["langmoe_bpb_en"]["bits_per_byte"] for k, v in got.items()}
    assert got["moe"]["n_samples"]["langmoe_bpb_en"] == LIMIT
    assert bpb["moe"] == pytest.approx(bpb["export"], rel=1e-5)
    assert bpb["moe"] == pytest.approx(_hand_bits_per_byte(root / "moe", tasks), rel=1e-5)
    dense_bpb = dense["results"]["langmoe_bpb_en"]["bits_per_byte"]
    assert dense_bpb == pytest.approx(_hand_bits_per_byte("builtin", tasks), rel=1e-5)
    assert abs(dense_bpb - bpb["moe"]) > 1e-3  # the experts count: a dense load of the MoE folder would not match


def test_cli_runs_both_shipped_tasks_offline_and_writes_json(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root, _ = folders
    out = tmp_path / "res.json"
    rc = main(["lm-eval", "--model", str(root / "moe"), "--tasks", "langmoe_bpb_en,langmoe_cont_en", "--limit", "2",
               "--out", str(out)])
    assert rc == 0
    assert "bits_per_byte" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"langmoe_bpb_en", "langmoe_cont_en"}
    assert 0 <= res["results"]["langmoe_cont_en"]["acc"] <= 1 and res["results"]["langmoe_bpb_en"]["bits_per_byte"] > 0
    assert res["command"].startswith("langmoe lm-eval")


@pytest.mark.slow  # indexing lm-eval's own ~15k task configs takes ~30 s
def test_unknown_task_is_one_line(capsys):
    assert main(["lm-eval", "--model", "builtin", "--tasks", "no_such_task_xyz"]) == 2
    assert "unknown lm-eval task(s) no_such_task_xyz" in capsys.readouterr().err


def test_missing_include_path_is_one_line(folders, capsys):
    root, tasks = folders
    assert main(["lm-eval", "--model", "builtin", "--tasks", "langmoe_bpb_en", "--include-path",
                 str(tasks / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_missing_lm_eval_is_one_line(monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError("No module named 'lm_eval'", name="lm_eval")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert main(["lm-eval", "--model", "builtin", "--tasks", "langmoe_bpb_en"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'langmoe[eval]'" in err[0]


def test_task_files_continuation_is_the_true_next_segment(tmp_path):
    names = write_tasks(tmp_path, langs=["en", "de"], max_docs=6, choices=3)
    assert set(names) == {"langmoe_bpb_en", "langmoe_bpb_de", "langmoe_cont_en", "langmoe_cont_de"}
    from langmoe.data.corpus import open_corpus

    docs = [d.text for d in open_corpus("builtin").iter_documents("de", "test")][:6]
    rows = [json.loads(x) for x in (tmp_path / "data" / "cont_de.jsonl").read_text().splitlines()]
    for row in rows:
        assert len(row["choices"]) == 3 and len(set(row["choices"])) == 3
        truth = row["context"] + row["choices"][row["label"]]
        assert any(d.startswith(truth) for d in docs)  # context + answer is a prefix of one document
    assert {r["label"] for r in rows} != {0}  # the answer is not always first
    assert split_text("short", 400, 120) is None


def _doc_yaml(task: str) -> str:
    """The YAML block of `task` as printed in docs/lm-eval.md."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "lm-eval.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", doc, flags=re.S):
        if f"task: {task}\n" in block:
            return block
    raise AssertionError(f"no YAML for {task} in docs/lm-eval.md")


def test_documented_belebele_and_multiblimp_yamls_run_on_local_rows(tmp_path):
    bele = tmp_path / "belebele.jsonl"
    rows = [{"flores_passage": "the cat sat on the mat. the dog ran.", "question": "where did the cat sit?",
             "mc_answer1": "on the mat", "mc_answer2": "in the park", "mc_answer3": "on a tree",
             "mc_answer4": "at home", "correct_answer_num": str(1 + i % 4)} for i in range(3)]
    bele.write_text("".join(json.dumps(r) + "\n" for r in rows))
    blimp = tmp_path / "blimp.jsonl"
    pairs = [("the cats sit on the mat.", "the cats sits on the mat."), ("she runs home.", "she run home.")]
    blimp.write_text("".join(json.dumps({"sen": a, "wrong_sen": b}) + "\n" for a, b in pairs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, data, path in [("belebele_local_eng_Latn", bele, "/data/belebele/eng_Latn.jsonl"),
                             ("multiblimp_local_eng", blimp, "/data/multiblimp/eng.jsonl")]:
        text = _doc_yaml(name)
        assert path in text
        (tasks / f"{name}.yaml").write_text(text.replace(path, str(data)))
    res = run_lm_eval("builtin", ["belebele_local_eng_Latn", "multiblimp_local_eng"], include_path=[tasks])
    assert res["n_samples"] == {"belebele_local_eng_Latn": 3, "multiblimp_local_eng": 2}
    assert all(0 <= res["results"][t]["acc"] <= 1 for t in res["results"])
