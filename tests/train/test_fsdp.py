"""FSDP2 through Accelerate on CPU (gloo), launched with the documented `accelerate launch --config_file` command:
2 sharded processes train a langmoe MoE (fused 3-D experts, frozen expert 0, label routing, frozen embeddings) to
the same weights as 1 plain process with twice the micro-batch, and the result saves as a normal folder that loads
on one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fsdp_worker as w
import pytest
import torch
from launch_fixtures import BIN, FSDP_YAML, run

from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.routing import routing

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="gloo launch test on POSIX only"),
    pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo"),
]

HERE = Path(__file__).resolve().parent


@torch.no_grad()
def _expert_out(model, x, expert):
    """Layer 1's MoE output with every token hard-routed to `expert`."""
    with routing(model, route_labels=torch.full(x.shape[:2], expert)):
        out = model.model.layers[1].mlp(x)
    return out[0] if isinstance(out, tuple) else out


def test_fsdp2_two_processes_match_one_and_save_a_plain_folder(tmp_path):
    (tmp_path / "fsdp.yaml").write_text(FSDP_YAML)
    out = tmp_path / "fsdp"
    res = run([str(BIN / "accelerate"), "launch", "--config_file", str(tmp_path / "fsdp.yaml"),
               str(HERE / "fsdp_worker.py"), str(out)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    got = torch.load(out / "result.pt")
    assert got["sharded"], "the trainer did not shard the model: FSDP config ignored"

    torch.set_num_threads(1)
    ref, ref_res = w.run(tmp_path / "single", 2 * w.MICRO)
    assert got["losses"] == pytest.approx(ref_res.losses, rel=1e-5)

    loaded = load_moe_pretrained(out / "model")  # one process, a normal folder
    want = ref.state_dict()
    have = loaded.state_dict()
    assert set(have) == set(want)
    start_model = w.tiny_moe()
    start = start_model.state_dict()
    changed = [k for k in want if not torch.equal(start[k], want[k])]
    assert any("mlp" in k for k in changed) and not any("embed_tokens" in k for k in changed)
    # Expert 0 is frozen, expert 1 trained: checked through routing, not through weight names.
    x = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_expert_out(loaded, x, 0), _expert_out(start_model, x, 0))
    assert not torch.allclose(_expert_out(loaded, x, 1), _expert_out(start_model, x, 1))
    for k in want:
        torch.testing.assert_close(have[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    ids = torch.arange(12).unsqueeze(0)
    torch.testing.assert_close(loaded(ids).logits, ref.eval()(ids).logits, rtol=1e-5, atol=1e-5)
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, w.STEPS + 1))
    assert (out / "checkpoints" / f"step-{w.STEPS}" / "trainer_state.json").is_file()
