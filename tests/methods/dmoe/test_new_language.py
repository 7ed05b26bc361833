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
                             group_of={"en": 0, "fr": 0, "de": 1, "nl": 1}, replay_rows=replay,
                             freeze_old_rows=bool(replay))
    assert res.final_step == 3
    for n, p in model.named_parameters():
        if build.is_expert_param(n):
            assert torch.equal(p[:2], before[n][:2]), n  # old experts: masked gradient, no weight decay
            assert not torch.equal(p[2], before[n][2]), n  # the new expert trained
        elif build.is_router_param(n):
            assert not torch.equal(p[2], before[n][2]), n  # the new row trained
            assert torch.equal(p[:2], before[n][:2]) == bool(replay), n  # old rows: frozen iff asked
        else:
            assert torch.equal(p, before[n]), n  # attention, embeddings, norms, dense FFN frozen


def _tiny_dmoe(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_base(tmp_path / "base")
    corpus = open_corpus(str(make_corpus(tmp_path / "corpus")))
    tok = AutoTokenizer.from_pretrained(str(base))
    dense = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    return dense, build.build_dmoe(copy.deepcopy(dense), [0, 2], 2, 2), tok, corpus


def test_margin_row_scores_old_centroid_below_its_source(tmp_path):
    """Hand check of the new-row init: on the old languages' router-input centroid c, logit(new) = logit(source)
    − margin exactly; the old rows are untouched."""
    from langmoe.methods.dmoe.new_language import init_new_row, router_input_centroids, router_weight

    _, model, tok, corpus = _tiny_dmoe(tmp_path)
    old = pack_corpus(corpus, tok, ["en", "de"], "train", 16, max_tokens_per_lang=400)
    cent = router_input_centroids(model, old)
    # independent centroid of layer 0's input: the embeddings after layer 0's post-attention norm
    rows_before = {b.layer_idx: router_weight(b).detach().clone() for b in moe_blocks(model)}
    new = build.add_language_expert(model, 1)
    init_new_row(model, new, cent, margin=2.0)
    for b in moe_blocks(model):
        w = router_weight(b).detach().double()
        c = cent[b.layer_idx].double()
        assert float(w[new] @ c) == pytest.approx(float(w[1] @ c) - 2.0, abs=1e-4)
        assert torch.equal(router_weight(b)[:2], rows_before[b.layer_idx])
    assert set(cent) == {0, 2} and cent[0].shape == (model.config.hidden_size,)


def test_router_input_centroid_is_the_block_input_mean(tmp_path):
    from langmoe.methods.dmoe.new_language import router_input_centroids

    _, model, tok, corpus = _tiny_dmoe(tmp_path)
    old = pack_corpus(corpus, tok, ["en"], "train", 16, max_tokens_per_lang=200)
    cent = router_input_centroids(model, old)
    model.eval()
    with torch.no_grad():  # independent: hidden state after layer 0's attention, through its post-attention norm
        batch = old.batch(list(range(len(old))))
        out = model(input_ids=batch["input_ids"], output_hidden_states=True)
        layer = model.model.layers[0]
        h = out.hidden_states[0]
        pos = torch.arange(h.shape[1]).unsqueeze(0)
        emb = model.model.rotary_emb(h, pos)
        attn = layer.self_attn(layer.input_layernorm(h), position_embeddings=emb, attention_mask=None)[0]
        x = layer.post_attention_layernorm(h + attn)
        valid = batch["labels"] != -100
        torch.testing.assert_close(cent[0], x[valid].mean(0), rtol=1e-4, atol=1e-5)


def test_add_language_cli_lifelong_to_new_folder(tmp_path, capsys):
    from langmoe.cli import main
    from langmoe.methods.dmoe.new_language_stage import write_languages_file
    from langmoe.models.moe_io import load_model_any, save_moe_pretrained

    dense, model, tok, _ = _tiny_dmoe(tmp_path)
    src = tmp_path / "dmoe"
    save_moe_pretrained(model, tok, src)
    write_languages_file(src, {"en": 0, "fr": 0, "de": 1, "nl": 1})
    dense.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    out = tmp_path / "out"
    args = ["add-language", "--model", str(src), "--lang", "es,it", "--corpus", str(tmp_path / "corpus"),
            "--out", str(out), "--base", str(tmp_path / "dense"), "--steps", "2", "--block-len", "16",
            "--micro-batch-size", "4", "--window", "32", "--stride", "16", "--max-chars", "200", "--threads", "1"]
    # "it" is not in the tiny corpus: one line, exit 2, nothing written
    assert main(args) == 2 and "it" in capsys.readouterr().err and not out.exists()
    make_corpus(tmp_path / "corpus", langs=("en", "fr", "de", "nl", "es", "it"))
    assert main(args) == 0
    grown, _ = load_model_any(out)
    assert all(b.num_experts == 4 for b in moe_blocks(grown))  # two languages, one after another
    import json

    langs = json.loads((out / "langmoe_languages.json").read_text())["expert_of"]
    assert langs == {"en": 0, "fr": 0, "de": 1, "nl": 1, "es": 2, "it": 3}
    res = json.loads((out / "add_language.json").read_text())["results"]
    assert [r["lang"] for r in res] == ["es", "it"] and "es" in res[1]["old_after"]  # es is old for it
    assert all(r["base"]["ppl"] > 0 for r in res)
    (out / "NOTES.txt").write_text("mine")  # a rerun replaces its own folder, but never a user's file in it
    assert main(args) == 2 and "NOTES.txt" in capsys.readouterr().err and (out / "NOTES.txt").is_file()


def test_keep_out_term_hand_values():
    """relu(l_new − l_(k) + margin) on old tokens only (group < new), padding ignored, mean over layers."""
    from types import SimpleNamespace

    import langmoe.methods.dmoe.new_language as nl_mod
    from langmoe.methods.dmoe.new_language import keep_out_term

    # 3 tokens, experts 0..2 old, 3 new; top_k 2, margin 1
    l1 = torch.tensor([[3.0, 2.0, 0.0, 1.5],    # old (group 0): k-th old = 2.0 -> relu(1.5 - 2 + 1) = 0.5
                       [0.0, 1.0, 4.0, -5.0],   # old (group 2): k-th = 1.0 -> relu(-5 - 1 + 1) = 0
                       [0.0, 0.0, 0.0, 9.0]])   # new-language token (group 3): ignored
    l2 = torch.tensor([[1.0, 1.0, 1.0, 1.0],    # relu(1 - 1 + 1) = 1
                       [0.0, 0.0, 0.0, 0.0],    # padding: ignored
                       [5.0, 5.0, 5.0, 5.0]])   # new token: ignored
    outs = [SimpleNamespace(logits=l1), SimpleNamespace(logits=l2)]
    batch = {"group_ids": torch.tensor([[0, 2, 3]]), "labels": torch.tensor([[1, 1, 1]])}
    orig = nl_mod.router_outputs
    try:
        nl_mod.router_outputs = lambda _m: outs
        batch2 = {"group_ids": torch.tensor([[0, 1, 3]]), "labels": torch.tensor([[1, -100, 1]])}
        v1 = keep_out_term(3, 2, 1.0)(None, batch, None)
        outs[:] = [SimpleNamespace(logits=l2)]
        v2 = keep_out_term(3, 2, 1.0)(None, batch2, None)
    finally:
        nl_mod.router_outputs = orig
    # layer 1: mean(0.5, 0) = 0.25; layer 2 with batch: tokens 0,1 old -> relu(1-1+1)=1, relu(0-0+1)=1 -> 1
    assert float(v1) == pytest.approx((0.25 + 1.0) / 2)
    assert float(v2) == pytest.approx(1.0)  # only token 0 counts (token 1 is padding, token 2 new)


def test_logistic_fit_separates_and_folds_the_standardisation_back():
    """A separable 2-class problem in badly scaled coordinates: the returned weight/bias act on the raw features."""
    from langmoe.methods.dmoe.new_language import logistic_fit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64) * torch.tensor([1000.0, 1.0, 0.01], dtype=torch.float64)
    y = (x[:, 1] > 0.2).long()
    w, b, loss = logistic_fit(x, y, 2, l2=1e-6, iters=300)
    assert w.shape == (2, 3) and b.shape == (2,) and loss < 0.2
    assert float(((x @ w.T + b).argmax(-1) == y).double().mean()) > 0.98


def _gated_tiny(tmp_path):
    dense, model, tok, corpus = _tiny_dmoe(tmp_path)
    new = build.add_language_expert(model, 1, "prefix")
    torch.manual_seed(0)
    with torch.no_grad():
        for b in moe_blocks(model):
            b.override.weight.normal_()
    return model, tok, corpus, new


@pytest.mark.parametrize("max_intrusion", [0.0, 0.1])
def test_calibrated_gate_keeps_every_old_language_under_the_intrusion(tmp_path, max_intrusion):
    from langmoe.methods.dmoe.new_language import _gate_margins, _half, calibrate_gates

    model, tok, corpus, new = _gated_tiny(tmp_path)
    old = pack_corpus(corpus, tok, ["en", "de", "fr"], "train", 16, max_tokens_per_lang=400)
    fresh = pack_corpus(corpus, tok, ["es"], "train", 16, max_tokens_per_lang=400)
    rep = calibrate_gates(model, old, fresh, max_intrusion, blocks_per_lang=1000)
    assert set(rep) == {0, 2}
    for layer, r in rep.items():
        assert set(r["old_intrusion"]) == {"en", "de", "fr"}
        assert max(r["old_intrusion"].values()) <= max_intrusion + 1e-6  # every language, not the mean
        for i, code in enumerate(old.index.codes):  # independent recount after the shift: margin > 0 = gated
            m = _gate_margins(model, old, layer, _half(old.indices_of(i), 1000, 1))
            assert float((m > 0).float().mean()) == pytest.approx(r["old_intrusion"][code], abs=1.5 / m.numel())
    if max_intrusion:  # the binding language sits at the bound (within one token)
        assert max(rep[0]["old_intrusion"].values()) > max_intrusion - 0.05


def test_spread_covers_every_language():
    from langmoe.methods.dmoe.new_language import spread

    assert spread(range(10), 3) == [0, 4, 9] and spread(range(3), 5) == [0, 1, 2] and spread(range(7), 1) == [0]


def test_gated_training_moves_only_the_new_expert_and_the_fit_only_the_gates(tmp_path):
    from langmoe.methods.dmoe.new_language import fit_gates

    model, tok, corpus, new = _gated_tiny(tmp_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    blocks = pack_corpus(corpus, tok, ["es"], "train", 16, max_tokens_per_lang=400)
    old = pack_corpus(corpus, tok, ["en", "de"], "train", 16, max_tokens_per_lang=400)
    cfg = {"steps": 3, "lr": 1e-2, "warmup_ratio": 0.0, "micro_batch_size": 4, "save_every": 0}
    res = train_new_language(model, blocks, "es", new, cfg, tmp_path / "gate", replay_blocks=old,
                             group_of={"en": 0, "de": 1}, replay_rows=1, gated=True)
    assert res.final_step == 3
    for n, p in model.named_parameters():
        if build.is_expert_param(n):
            assert torch.equal(p[:new], before[n][:new]) and not torch.equal(p[new], before[n][new]), n
        else:
            assert torch.equal(p, before[n]), n  # gates, router rows, attention, embeddings, norms, dense FFN
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    rep = fit_gates(model, [(old, {"en": 0, "de": 0}), (blocks, {"es": 1})], blocks_per_lang=8)
    assert set(rep) == {0, 2} and all(r["tokens"] > 0 for r in rep.values())
    for n, p in model.named_parameters():
        assert torch.equal(p, trained[n]) != ("router.override." in n), n  # the fit moves the gates and nothing else
