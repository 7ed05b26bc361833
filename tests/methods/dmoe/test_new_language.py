"""New-language expansion: the copied expert is picked by hard-routed perplexity; training moves only it + routers."""

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import make_base, make_corpus  # noqa: E402

from langmoe.data.corpus import open_corpus  # noqa: E402
from langmoe.data.packing import pack_corpus  # noqa: E402
from langmoe.methods.dmoe import build  # noqa: E402
from langmoe.methods.dmoe.new_language import expert_perplexities, train_new_language  # noqa: E402
from langmoe.models.moe import moe_blocks  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.mark.parametrize("replay", [0, 1])
def test_pick_copy_train_leaves_old_experts_and_dense_weights_exact(tmp_path, replay):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_base(tmp_path / "base")
    corpus = open_corpus(str(make_corpus(tmp_path / "corpus")))
    tok = AutoTokenizer.from_pretrained(str(base))
    dense = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = build.build_dmoe(copy.deepcopy(dense), [0, 2], 2, 2)
    with torch.no_grad():  # expert 1 differs from the dense FFN; expert 0 is still an exact copy
        for b in moe_blocks(model):
            b.experts.down_proj[1].add_(torch.randn_like(b.experts.down_proj[1]))
    ekw = {"split": "test", "window": 32, "stride": 16, "max_chars_per_lang": 200, "batch_size": 4}
    ppl = expert_perplexities(model, tok, corpus, "es", 2, ekw)
    from langmoe.eval.perplexity import evaluate_languages

    ref = evaluate_languages(dense, tok, corpus, ["es"], **ekw)["es"].ppl
    assert ppl[0] == pytest.approx(ref, rel=1e-5) and ppl[1] != pytest.approx(ref, rel=1e-3)
    new = build.add_language_expert(model, 0)
    assert new == 2 and all(b.num_experts == 3 for b in moe_blocks(model))
    for b in moe_blocks(model):
        assert torch.equal(b.experts.gate_up_proj[2], b.experts.gate_up_proj[0])
        assert torch.equal(b.router.weight[2], b.router.weight[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    blocks = pack_corpus(corpus, tok, ["es"], "train", 16, max_tokens_per_lang=400)
    cfg = {"steps": 3, "lr": 1e-2, "warmup_ratio": 0.0, "micro_batch_size": 4, "save_every": 0}
    old = pack_corpus(corpus, tok, ["en", "fr", "de", "nl"], "train", 16, max_tokens_per_lang=400)
    res = train_new_language(model, blocks, "es", new, cfg, tmp_path / "nl", replay_blocks=old,
                             group_of={"en": 0, "fr": 0, "de": 1, "nl": 1}, replay_rows=replay)
    assert res.final_step == 3
    for n, p in model.named_parameters():
        if build.is_expert_param(n):
            assert torch.equal(p[:2], before[n][:2]), n  # old experts: masked gradient, no weight decay
            assert not torch.equal(p[2], before[n][2]), n  # the new expert trained
        elif build.is_router_param(n):
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n  # attention, embeddings, norms, dense FFN frozen
