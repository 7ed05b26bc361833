"""A small mutation run: do the tests catch plausible one-line bugs?

Each mutant replaces one snippet (which must occur exactly once) in one module of a temporary COPY of `src/`
(the real files are never touched), then runs only the test files mapped to that module with `pytest -x -q` and
`PYTHONPATH` pointing at the copy. A failing run kills the mutant; a passing run means it survived (a bug the
tests would let through). The kill rate is killed / (killed + survived); mutants whose snippet is not found are
reported as stale and left out of the rate.

A module that moved keeps working: when the snippet is no longer in `file`, the one file under `src/langmoe` that
contains it is used instead, unless `file` still exists and that other file is a mapped module of its own (then the
line is most likely a similar one elsewhere, and the mutant is reported stale, to re-target).

    python scripts/mutate.py                 # every mutant (tens of minutes on a loaded 2-core machine)
    python scripts/mutate.py --only lb-k,nl-argmax
    python scripts/mutate.py --round2        # only the mutants of rounds 1 and 2 (60)
    python scripts/mutate.py --round3        # only the mutants written in round 3 (issue 25; 52)
    python scripts/mutate.py --freezing      # only round 3's freezing mutants (what trains and what does not)
    python scripts/mutate.py --round2 --freezing   # flags combine
    python scripts/mutate.py --list          # mutants and their tests, nothing run
    python scripts/mutate.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/langmoe"

# Module -> the test files that should catch a bug in it (fast independent tests first, since -x stops there).
TESTS: dict[str, list[str]] = {
    "data/samplers.py": ["tests/data/test_samplers_independent.py", "tests/data/test_samplers.py"],
    "data/packing.py": ["tests/data/test_packing_independent.py", "tests/data/test_packing.py"],
    "methods/dmoe/grouping.py": ["tests/methods/dmoe/test_grouping_independent.py",
                                 "tests/methods/dmoe/test_grouping.py"],
    "methods/dmoe/layer_selection.py": ["tests/methods/dmoe/test_layer_selection_independent.py",
                                        "tests/methods/dmoe/test_layer_selection.py"],
    "train/router_losses.py": ["tests/train/test_router_losses_hand.py", "tests/train/test_router_losses.py"],
    "eval/perplexity.py": ["tests/eval/test_perplexity_independent.py", "tests/eval/test_perplexity.py"],
    "eval/unigram.py": ["tests/eval/test_perplexity_independent.py", "tests/eval/test_unigram.py"],
    "methods/dmoe/deviation.py": ["tests/methods/dmoe/test_deviation_independent.py",
                                  "tests/methods/dmoe/test_deviation.py"],
    "train/schedule.py": ["tests/train/test_schedule_values.py"],
    "methods/dmoe/stages.py": ["tests/methods/dmoe/test_routing_statistics_independent.py"],
    "models/routing.py": ["tests/methods/dmoe/test_routing_statistics_independent.py"],
    "pipeline/new_language_stage.py": ["tests/pipeline/test_new_language_choice.py"],
    "methods/dmoe/new_language.py": ["tests/methods/dmoe/test_new_language.py",
                                     "tests/methods/dmoe/test_add_language_trained.py"],
    # round 3: expansion (MoE-LPR / LayerMoE), the language gate, routing metrics, adapt, outputs, lock
    "methods/layermoe/allocation.py": ["tests/methods/layermoe/test_allocation_bounds.py",
                                       "tests/methods/layermoe/test_similarity_allocation.py"],
    "methods/layermoe/similarity.py": ["tests/methods/layermoe/test_similarity_allocation.py",
                                       "tests/methods/layermoe/test_layermoe.py"],
    "methods/layermoe/plan.py": ["tests/methods/layermoe/test_allocation_bounds.py",
                                 "tests/methods/layermoe/test_layermoe.py"],
    "methods/expansion/surgery.py": ["tests/methods/expansion/test_trained_moved.py",
                                     "tests/methods/expansion/test_surgery.py"],
    "methods/expansion/stages.py": ["tests/methods/expansion/test_trained_moved.py",
                                    "tests/methods/expansion/test_expansion_stages.py",
                                    "tests/methods/layermoe/test_stage2_trained.py"],
    "methods/expansion/data.py": ["tests/methods/expansion/test_trained_moved.py",
                                  "tests/methods/expansion/test_data.py"],
    "methods/expansion/config.py": ["tests/methods/expansion/test_trained_moved.py",
                                    "tests/methods/layermoe/test_allocation_bounds.py"],
    "models/overrides/gate.py": ["tests/models/overrides/test_gate_trained.py", "tests/models/overrides/test_gate.py"],
    "methods/routing/metrics.py": ["tests/methods/routing/test_metrics_hand.py", "tests/methods/routing/test_metrics.py"],
    "methods/routing/adapt.py": ["tests/methods/routing/test_adapt_moved.py", "tests/methods/routing/test_adapt.py"],
    "io.py": ["tests/cli/test_outputs.py", "tests/cli/test_output_reruns.py"],
    "lock.py": ["tests/cli/test_outputs.py"],
    # round 3, what trains and what does not (the per-parameter tests of every training entry point)
    "train/trainer.py": ["tests/methods/dmoe/test_add_language_trained.py", "tests/test_pretrain_trained.py"],
    "models/routers.py": ["tests/methods/dmoe/test_add_language_trained.py",
                          "tests/methods/expansion/test_trained_moved.py"],
    "train/routing_context.py": ["tests/methods/dmoe/test_stages_trained.py"],
    "pipeline/stages.py": ["tests/methods/xelm/test_xelm_trained.py"],
}


@dataclass
class Mutant:
    name: str
    file: str  # relative to src/langmoe
    old: str
    new: str


M = Mutant
MUTANTS: list[Mutant] = [
    # ---- samplers: exponents, budgets, rank slices, draw numbering, quotas
    M("tau-lang-inverted", "data/samplers.py", "_QuotaStream(sizes**tau,",
      "_QuotaStream(sizes ** (1 / tau) if tau > 0 else sizes**tau,"),
    M("tau-group-inverted", "data/samplers.py", "weights, period = sizes**self.tau, 1024 * len(units)",
      "weights, period = (sizes ** (1 / self.tau) if self.tau > 0 else sizes), 1024 * len(units)"),
    M("tau-group-ignored", "data/samplers.py", "weights, period = sizes**self.tau, 1024 * len(units)",
      "weights, period = sizes, 1024 * len(units)"),
    M("equal-budget-ignored", "data/samplers.py", "weights, period = np.ones(len(units)), 16 * len(units)",
      "weights, period = sizes, 16 * len(units)"),
    M("temperature-tau-ignored", "data/samplers.py", "np.ones(1), self.tau, seed", "np.ones(1), 1.0, seed"),
    M("rank-slice", "data/samplers.py", "return idx[rank * self.batch_size:(rank + 1) * self.batch_size]",
      "return idx[rank:rank + self.batch_size]"),
    M("draw-numbering", "data/samplers.py", "draw(step * self.grad_accum + micro,", "draw(step + micro,"),
    M("quota-remainder", "data/samplers.py", "q[order[:rest]] += 1", "q[order[:rest + 1]] += 1"),
    M("quota-counter", "data/samplers.py", "np.bincount(arr[:pos], minlength", "np.bincount(arr[:pos + 1], minlength"),
    # ---- packing: tails, boundaries, padding
    M("tail-min-gt", "data/packing.py", "nb = n_full + (1 if rest >= _MIN_PARTIAL else 0)",
      "nb = n_full + (1 if rest > _MIN_PARTIAL else 0)"),
    M("tail-min-1", "data/packing.py", "_MIN_PARTIAL = 2", "_MIN_PARTIAL = 1"),
    M("tail-left-padded", "data/packing.py", "out[r, :n] = self.streams[int(self.which[i])]",
      "out[r, self._T - n:] = self.streams[int(self.which[i])]"),
    M("cap-off-by-one", "data/packing.py", "min(len(st), max_tokens_per_lang) for st in streams",
      "min(len(st), max_tokens_per_lang - 1) for st in streams"),
    M("pad-mask-gt", "data/packing.py", "pad = torch.arange(T).unsqueeze(0) >= self.lengths[idx]",
      "pad = torch.arange(T).unsqueeze(0) > self.lengths[idx]"),
    M("pad-label-zero", "data/packing.py", "labels[pad] = IGNORE_INDEX", "labels[pad] = 0"),
    M("block-count-off-by-one", "data/packing.py", "n_full, rest = divmod(int(n), block_len)",
      "n_full, rest = divmod(int(n) - 1, block_len)"),
    # ---- grouping: diameter, tie-breaks, growth, sizes
    M("diameter-mean", "methods/dmoe/grouping.py", "diam = dist.max(axis=1)", "diam = dist.mean(axis=1)"),
    M("tie-order-swapped", "methods/dmoe/grouping.py", "np.lexsort((mean.round(12), diam.round(12)))",
      "np.lexsort((diam.round(12), mean.round(12)))"),
    M("tie-last-batch", "methods/dmoe/grouping.py", "if best is None or cand < best:",
      "if best is None or cand <= best:"),
    M("distance-unsymmetrised", "methods/dmoe/grouping.py", "d = 1.0 - (s + s.T) / 2.0", "d = 1.0 - s"),
    M("grow-argmax", "methods/dmoe/grouping.py", "members.append(others[int(np.argmin(cost))])",
      "members.append(others[int(np.argmax(cost))])"),
    M("grow-mean-cost", "methods/dmoe/grouping.py", "cost = d[np.ix_(rem[others], rem[members])].max(axis=1)",
      "cost = d[np.ix_(rem[others], rem[members])].mean(axis=1)"),
    M("sizes-smaller-first", "methods/dmoe/grouping.py", "return [base + 1] * rest + [base] * (num_groups - rest)",
      "return [base] * (num_groups - rest) + [base + 1] * rest"),
    M("leftover-dropped", "methods/dmoe/grouping.py", "return [group_size] * full + ([rest] if rest else [])",
      "return [group_size] * full"),
    M("singleton-last", "methods/dmoe/grouping.py",
      "        return [remaining[0]]\n    rem = np.asarray(remaining)\n    pairs",
      "        return [remaining[-1]]\n    rem = np.asarray(remaining)\n    pairs"),
    M("ari-expected-over-n", "methods/dmoe/grouping.py", "expected = sum_a * sum_b / total if total else 0.0",
      "expected = sum_a * sum_b / n if total else 0.0"),
    M("nmi-max-normaliser", "methods/dmoe/grouping.py", "denom = (ha + hb) / 2.0", "denom = max(ha, hb)"),
    # ---- layer selection
    M("epsilon-strict", "methods/dmoe/layer_selection.py", "norm[i] >= float(epsilon) - 1e-12",
      "norm[i] > float(epsilon)"),
    M("minmax-no-shift", "methods/dmoe/layer_selection.py", "norm = (mean - lo) / (hi - lo)",
      "norm = (mean - lo) / hi"),
    M("layer-max-not-mean", "methods/dmoe/layer_selection.py", "mean = dev.mean(axis=0)", "mean = dev.max(axis=0)"),
    M("top-n-smallest", "methods/dmoe/layer_selection.py", "key=lambda i: (-norm[i], i))",
      "key=lambda i: (norm[i], i))"),
    M("top-n-tie-later", "methods/dmoe/layer_selection.py", "key=lambda i: (-norm[i], i))",
      "key=lambda i: (-norm[i], -i))"),
    # ---- router losses
    M("lb-f-not-over-k", "train/router_losses.py", "f = counts / (n_tok * k)", "f = counts / n_tok"),
    M("lb-no-E", "train/router_losses.py", "losses.append(E * (f * P).sum())", "losses.append((f * P).sum())"),
    M("lb-softmax-dim", "train/router_losses.py", "probs = torch.softmax(t.float(), dim=-1)",
      "probs = torch.softmax(t.float(), dim=0)"),
    M("lb-top1-only", "train/router_losses.py", "idx = probs.topk(top_k, dim=-1).indices",
      "idx = probs.topk(1, dim=-1).indices"),
    M("lpr-wrong-expert", "train/router_losses.py", "labels = torch.where(is_old, 0, -100)",
      "labels = torch.where(is_old, 1, -100)"),
    M("z-not-squared", "train/router_losses.py", "z = torch.logsumexp(t.float(), dim=-1).pow(2)",
      "z = torch.logsumexp(t.float(), dim=-1).abs()"),
    M("ignore-or", "train/router_losses.py", "valid &= labels != v", "valid |= labels != v"),
    M("lb-global-counts-slice", "train/router_losses.py", "counts, n_tok = stats[:E], stats[-1]",
      "counts, n_tok = stats[E : 2 * E], stats[-1]"),
    M("ce-sum-layers", "train/router_losses.py",
      "lab[valid]))\n    return torch.stack(losses).mean()", "lab[valid]))\n    return torch.stack(losses).sum()"),
    # ---- perplexity / bits per byte / windows
    M("window-context-short", "eval/perplexity.py", "yield end - window, end, first",
      "yield end - window + 1, end, first"),
    M("stride-not-capped", "eval/perplexity.py", "step = min(stride, window - 1)", "step = stride"),
    M("target-shift", "eval/perplexity.py", "target[r, t[keep] - begin - 1] = ids[t[keep]]",
      "target[r, t[keep] - begin] = ids[t[keep]]"),
    M("bpb-nats", "eval/perplexity.py", "bits_per_byte=nll_sum / LN2 / nbytes", "bits_per_byte=nll_sum / nbytes"),
    M("ppl-per-byte", "eval/perplexity.py", "ppl=math.exp(min(nll_sum / tokens, 700.0))",
      "ppl=math.exp(min(nll_sum / nbytes, 700.0))"),
    M("eos-scored", "eval/perplexity.py", "            scored.append(False)", "            scored.append(True)"),
    M("char-cap-off-by-one", "eval/perplexity.py", "text = text[:room]", "text = text[:room + 1]"),
    M("unigram-no-V", "eval/unigram.py", "math.log(float(counts.sum()) + vocab_size)",
      "math.log(float(counts.sum()))"),
    # ---- deviation
    M("deviation-biases", "methods/dmoe/deviation.py", "if p.dim() >= 2 and id(p) in full:",
      "if p.dim() >= 1 and id(p) in full:"),
    M("deviation-squared", "methods/dmoe/deviation.py", "dev_ffn.append(sq**0.5)", "dev_ffn.append(sq)"),
    # ---- LR schedule
    M("warmup-from-zero", "train/schedule.py", "return (step + 1) / self.warmup_steps",
      "return step / self.warmup_steps"),
    M("decay-steps", "train/schedule.py", "decay_steps = self.total_steps - self.warmup_steps - 1",
      "decay_steps = self.total_steps - self.warmup_steps"),
    # (round 3: the snippet now occurs twice, in the plain and the continued scheduler: the plain one, by context)
    M("warmup-floor", "train/schedule.py",
      "int(round(warmup_ratio * total_steps)))\n    return torch.optim.lr_scheduler.LambdaLR(optimizer, "
      "WarmupCosine(total_steps, warmup, min_lr_ratio))",
      "int(warmup_ratio * total_steps))\n    return torch.optim.lr_scheduler.LambdaLR(optimizer, "
      "WarmupCosine(total_steps, warmup, min_lr_ratio))"),
    M("cosine-quarter", "train/schedule.py", "math.cos(math.pi * progress)", "math.cos(math.pi * progress / 2)"),
    # ---- routing statistics
    M("routing-second-column", "methods/dmoe/stages.py", "top1 = out.topk_idx[:, 0]", "top1 = out.topk_idx[:, 1]"),
    # (round 3: the padding mask of routing statistics moved to models/routing.py's iter_routing; the old snippet
    # was found in layermoe/similarity.py instead, a different module, where sim-padding-counted covers it)
    M("routing-padding-counted", "models/routing.py", 'yield batch, (batch["labels"] != -100).reshape(-1),',
      'yield batch, (batch["labels"] != -200).reshape(-1),'),
    # ---- new language
    M("nl-argmax", "pipeline/new_language_stage.py", "source = min(range(k), key=lambda i: per_expert[i])",
      "source = max(range(k), key=lambda i: per_expert[i])"),
    # (round 3: the old experts' gradient mask moved to models/routers.py's freeze_expert_rows)
    M("nl-old-expert-unmasked", "models/routers.py", "freeze_rows(p, torch.arange(p.shape[0]) < k)",
      "freeze_rows(p, torch.arange(p.shape[0]) < k - 1)"),
    M("nl-weight-decay", "methods/dmoe/new_language.py", 'cfg = {**dict(train_config), "weight_decay": 0.0}',
      "cfg = dict(train_config)"),
    # ==== round 3 (issue 25): written against the round-2 code, not against its tests ====
    # ---- LayerMoE allocation, similarity, plan
    M("lm-share-not-inverted", "methods/layermoe/allocation.py", "    inv = 1.0 / s\n", "    inv = s\n"),
    M("lm-ceil-floor", "methods/layermoe/allocation.py", "[int(math.ceil(x)) for x in w * float(delta)]",
      "[int(math.floor(x)) for x in w * float(delta)]"),
    M("lm-new-may-be-zero", "methods/layermoe/allocation.py", "return [max(1, n - 1) for n in allocate(S, delta)]",
      "return [max(0, n - 1) for n in allocate(S, delta)]"),
    M("lm-budget-boundary", "methods/layermoe/allocation.py", "    if budget < L:", "    if budget <= L:"),
    M("lm-solve-overshoots", "methods/layermoe/allocation.py", "if sum(alloc) >= budget:", "if sum(alloc) > budget:"),
    M("lm-random-no-floor", "methods/layermoe/allocation.py", "alloc = np.ones(n_layers, dtype=np.int64)",
      "alloc = np.zeros(n_layers, dtype=np.int64)"),
    M("lm-topk-least-similar", "methods/layermoe/allocation.py", "order = sorted(layers, key=lambda i: (-S[i], i))",
      "order = sorted(layers, key=lambda i: (S[i], i))"),
    M("lm-topk-tie-later", "methods/layermoe/allocation.py", "order = sorted(layers, key=lambda i: (-S[i], i))",
      "order = sorted(layers, key=lambda i: (-S[i], -i))"),
    M("lm-fraction-counts-frozen", "methods/layermoe/plan.py",
      "round(cfg.budget_fraction * (cfg.uniform_experts - 1) * n_layers)",
      "round(cfg.budget_fraction * cfg.uniform_experts * n_layers)"),
    M("lm-delta-counts-frozen", "methods/layermoe/plan.py", "new = {i: n - 1 for i, n in enumerate(N) if n >= 2}",
      "new = {i: n for i, n in enumerate(N) if n >= 2}"),
    M("lm-lifelong-old-forgotten", "methods/layermoe/plan.py",
      "known_old = [x for x in dict.fromkeys(inputs.input.known_langs + cfg.old) if x not in cfg.new]",
      "known_old = list(cfg.old)"),
    M("lm-record-n-new-only", "methods/layermoe/plan.py", '"N": [a + 1 for a in alloc]', '"N": list(alloc)'),
    M("sim-new-new-only", "methods/layermoe/similarity.py", "s = (s + sum(nn_) / len(nn_)) / 2",
      "s = sum(nn_) / len(nn_)"),
    M("sim-padding-counted", "methods/layermoe/similarity.py",
      'valid = (batch["labels"] != -100).reshape(-1)', 'valid = (batch["labels"] != -200).reshape(-1)'),
    M("sim-not-unit", "methods/layermoe/similarity.py", "u = h / norm.clamp_min(1e-300)", "u = h"),
    # ---- expansion: surgery, stages, data, config
    M("surg-xavier-std", "methods/expansion/surgery.py", "std = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))",
      "std = math.sqrt(1.0 / (w.shape[0] + w.shape[1]))"),
    M("surg-old-router-rows-reset", "methods/expansion/surgery.py", "w[first:] = fresh[first:].to(w)",
      "w[:] = fresh.to(w)"),
    M("surg-copy-last-expert", "methods/expansion/surgery.py", "add_expert(model, int(i), 0)",
      "add_expert(model, int(i), int(before[i]) - 1)"),
    M("st-lifelong-not-frozen", "methods/expansion/stages.py",  # (second run: the call grew router_rows=)
      "handles = freeze_expert_rows(model, frozen_prefix, router_rows=router_rows) if frozen_prefix else []",
      "handles = []"),
    M("st-lifelong-decay", "methods/expansion/stages.py", "wd = 0.0 if handles else None", "wd = None"),
    M("st-stage1-experts-untrained", "methods/expansion/stages.py", '("experts", "router")))', '("router",)))'),
    M("st-stage2-trains-experts", "methods/expansion/stages.py", '("router", "classifier")))',
      '("router", "classifier", "experts")))'),
    M("st-lpr-every-language", "methods/expansion/stages.py",
      'LossTerm("lpr", cfg.lpr_weight, lpr_term(data.expert0_ids))',
      'LossTerm("lpr", cfg.lpr_weight, lpr_term(list(range(len(data.codes)))))'),
    M("st-classifier-term-dropped", "methods/expansion/stages.py", "        if cls_weight:\n",
      "        if cls_weight and False:\n"),
    M("st-lb-dropped", "methods/expansion/stages.py", "if terms and lb else []", "if False else []"),
    M("data-replay-one-block", "methods/expansion/data.py",
      "per_lang = max(cfg.block_len, math.ceil(replay / len(cfg.old)))", "per_lang = cfg.block_len"),
    M("data-expert0-every-language", "methods/expansion/data.py",
      "e0 = [codes.index(c) for c in expert0_langs if c in codes]", "e0 = list(range(len(codes)))"),
    M("data-share-of-stage1", "methods/expansion/data.py",
      "stage_tokens(cfg.micro_batch_size * cfg.block_len, cfg.stage2.steps)",
      "stage_tokens(cfg.micro_batch_size * cfg.block_len, cfg.stage1.steps)"),
    M("cfg-replay-boundary", "methods/expansion/config.py", "if stage2_steps and replay > s2:",
      "if stage2_steps and replay >= s2:"),
    M("cfg-stage-steps-floor", "methods/expansion/config.py", "s2 = int(round(stage2_share * budget_steps))",
      "s2 = int(stage2_share * budget_steps)"),
    # ---- the language gate
    M("gate-target-offset", "models/overrides/gate.py", "cls + self.first_new - 1,", "cls + self.first_new,"),
    M("gate-mask-includes-first-new", "models/overrides/gate.py",
      "torch.arange(num_experts, device=device) < self.first_new",
      "torch.arange(num_experts, device=device) <= self.first_new"),
    M("gate-prefix-not-causal", "models/overrides/gate.py", "(x3.float().cumsum(dim=1) / steps)",
      "(x3.float().mean(dim=1, keepdim=True).expand_as(x3))"),
    # ---- routing metrics
    M("met-alpha-strict", "methods/routing/metrics.py", "if gap[e] >= alpha and a[top[e], e] > 0:",
      "if gap[e] > alpha and a[top[e], e] > 0:"),
    M("met-gap-no-runner-up", "methods/routing/metrics.py", "a_layer[top, cols] - a_layer[second, cols]",
      "a_layer[top, cols]"),
    M("met-shared-least", "methods/routing/metrics.py", 'np.argsort(-a, kind="stable")[:k]',
      'np.argsort(a, kind="stable")[:k]'),
    M("met-jsd-not-squared", "methods/routing/metrics.py", "float(jensenshannon(a[i], a[j], base=base)) ** 2",
      "float(jensenshannon(a[i], a[j], base=base))"),
    M("met-spec-unweighted", "methods/routing/metrics.py", "h_l_e = sum(p_e[e] * _h_bits(", "h_l_e = sum(1.0 * _h_bits("),
    M("met-entropy-base2", "methods/routing/metrics.py", "float(_entropy(a[i, j], base=base))",
      "float(_entropy(a[i, j], base=2))"),
    # ---- adapt (SEFT / SSFT / AEFT)
    M("adapt-ssft-no-shared", "methods/routing/adapt.py",
      "chosen += [e for e in M.shared_experts(c, j, n_shared) if e not in chosen]", "chosen += []"),
    M("adapt-first-row-dropped", "methods/routing/adapt.py", "        if e - offset >= 0:", "        if e - offset > 0:"),
    M("adapt-hook-zeroes-trained", "methods/routing/adapt.py", "self._handles.append(freeze_rows(p, frozen))",
      "self._handles.append(freeze_rows(p, ~frozen))"),
    M("adapt-no-restore", "methods/routing/adapt.py", "            p[frozen] = self._saved[name]\n",
      "            pass\n"),
    M("adapt-first-layers", "methods/routing/adapt.py", "return list(range(n_moe - last_n, n_moe))",
      "return list(range(last_n))"),
    M("adapt-no-mask", "methods/routing/adapt.py", "            if plan.allowed:\n", "            if False:\n"),
    # ---- outputs and the lock
    M("io-contains-input", "io.py", "        if _inside(r, real):", "        if False:"),
    M("io-user-file-replaced", "io.py",
      "return not isinstance(listed, list) or path.name in listed or path.name in (m.get(\"others\") or {})",
      "return True"),
    M("io-foreign-files-kept-quiet", "io.py", "            _refuse_foreign_files(f\"{flag} {out}\", out, m)",
      "            pass"),
    M("lock-pid-reuse", "lock.py", "return started is not None and now is not None and started != now",
      "return False"),
    M("lock-other-host-stale", "lock.py",
      'if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):',
      'if not isinstance(holder.get("pid"), int):'),
    M("lock-other-user-dead", "lock.py", "    except PermissionError:\n        return True",
      "    except PermissionError:\n        return False"),
    M("lock-release-others", "lock.py",
      'if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():',
      "if holder:"),
    # ==== round 3, second part: the freezing logic, against the per-parameter "what trains" tests ====
    M("trainer-trainable-ignored", "train/trainer.py", "p.requires_grad_(bool(trainable(name, p)))",
      "p.requires_grad_(True)"),
    M("freeze-rows-off-by-one", "models/routers.py", "freeze_rows(p, torch.arange(p.shape[0]) < k)",
      "freeze_rows(p, torch.arange(p.shape[0]) <= k)"),
    M("nl-old-router-rows-train", "methods/dmoe/new_language.py",
      "router_rows=freeze_old_rows and not gated)", "router_rows=False)"),
    M("nl-old-experts-unfrozen", "methods/dmoe/new_language.py",
      "handles = freeze_expert_rows(model, int(new_expert), router_rows=freeze_old_rows and not gated)",
      "handles = []"),
    M("hard-routing-one-expert", "train/routing_context.py", "return routing(model, route_labels=labels)",
      "return routing(model, route_labels=labels * 0)"),
    M("xelm-branch-every-language", "pipeline/stages.py", "subset_blocks(run.blocks(), langs)", "run.blocks()"),
    M("adapt-trainable-all", "methods/routing/adapt.py", "p.requires_grad_(id(p) in keep)", "p.requires_grad_(True)"),
    M("adapt-full-skips-embeddings", "methods/routing/adapt.py", "        plan.full = named\n",
      '        plan.full = {n: p for n, p in named.items() if "embed" not in n}\n'),
    M("adapt-lora-every-layer", "methods/routing/adapt.py",
      "targets = {r_.layer for r_ in layers if r_.layer in plan.layers}", "targets = {r_.layer for r_ in layers}"),
    M("adapt-lora-no-experts", "methods/routing/adapt.py", "target_parameters=experts or None)",
      "target_parameters=None)"),
    M("st-stage2-classifiers-frozen", "methods/expansion/stages.py", '("router", "classifier")))', '("router",)))'),
]
_FIRST3 = MUTANTS.index(next(m for m in MUTANTS if m.name == "lm-share-not-inverted"))
_FIRST3B = MUTANTS.index(next(m for m in MUTANTS if m.name == "trainer-trainable-ignored"))
ROUND2 = MUTANTS[:_FIRST3]
ROUND3 = MUTANTS[_FIRST3:_FIRST3B]  # the 52 of round 3's first run
FREEZING = MUTANTS[_FIRST3B:]  # round 3, second part


def locate(src: Path, m: Mutant) -> tuple[str | None, str]:
    """(file relative to the package, note): the named file if it holds the snippet once, else the one file that
    does (the module moved), else None."""
    pkg = src / "langmoe"
    p = pkg / m.file
    if p.is_file() and p.read_text(encoding="utf-8").count(m.old) == 1:
        return m.file, ""
    hits = [f for f in pkg.rglob("*.py") if "__pycache__" not in f.parts
            and f.read_text(encoding="utf-8").count(m.old) == 1]
    if len(hits) == 1:
        rel = hits[0].relative_to(pkg).as_posix()
        if p.is_file() and rel in TESTS:  # the line left a module that still exists, for another module with its
            # own tests: most likely a similar line elsewhere, not this mutant's code (mapped tests would not match)
            return None, f"snippet left {m.file} and is found in {rel}, another mapped module: re-target the mutant"
        return rel, f"moved: {m.file} -> {rel}"
    return None, f"snippet not found once in {m.file} ({len(hits)} other files hold it)"


def tests_for(m: Mutant) -> list[str]:
    return [t for t in TESTS.get(m.file, []) if (ROOT / t).is_file()]


def run_tests(tests: list[str], src: Path, timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        tail = (p.stdout + p.stderr).strip().splitlines()
        return p.returncode, time.perf_counter() - t0, tail[-1] if tail else ""
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - t0, f"timeout after {timeout:.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutant names")
    ap.add_argument("--round2", action="store_true", help="only the mutants written in rounds 1 and 2")
    ap.add_argument("--round3", action="store_true", help="only the mutants written in round 3 (issue 25)")
    ap.add_argument("--freezing", action="store_true",
                    help="only round 3's freezing mutants (what trains and what does not)")
    ap.add_argument("--list", action="store_true", help="list mutants and their tests, run nothing")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each test set")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (a timeout kills)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    picked = [(args.round2, ROUND2), (args.round3, ROUND3), (args.freezing, FREEZING)]
    chosen = [m for flag, part in picked if flag for m in part] or MUTANTS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTANTS}
        if unknown:
            print(f"unknown mutants: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in chosen:
            rel, note = locate(ROOT / "src", m)
            print(f"{m.name:26s} {rel or '?':34s} {' '.join(tests_for(m))} {note}")
        return 0

    with tempfile.TemporaryDirectory(prefix="langmoe-mut-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        check = subprocess.run([sys.executable, "-c", "import langmoe; print(langmoe.__file__)"], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(src)):
            print(f"the copy is not the langmoe that imports ({check.stdout.strip()}): aborting", file=sys.stderr)
            return 2
        if not args.no_baseline:
            for tests in sorted({tuple(tests_for(m)) for m in chosen if tests_for(m)}):
                rc, secs, tail = run_tests(list(tests), src, args.timeout)
                print(f"baseline {'ok  ' if rc == 0 else 'FAIL'} {secs:6.1f}s {' '.join(tests)}  {tail}", flush=True)
                if rc != 0:
                    print("the unmutated tests fail: fix them before a mutation run", file=sys.stderr)
                    return 2
        results = []
        for m in chosen:
            rel, note = locate(src, m)
            tests = tests_for(m)
            if rel is None or not tests:
                results.append({"name": m.name, "file": m.file, "status": "stale",
                                "note": note if rel is None else "no test files mapped"})
                print(f"STALE    {m.name:26s} {results[-1]['note']}", flush=True)
                continue
            path = src / "langmoe" / rel
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
            try:
                rc, secs, tail = run_tests(tests, src, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            status = "survived" if rc == 0 else "killed"
            results.append({"name": m.name, "file": rel, "status": status, "rc": rc, "seconds": round(secs, 1),
                            "old": m.old, "new": m.new, "tests": tests, "last_line": tail, "note": note})
            print(f"{status.upper():8s} {m.name:26s} {secs:6.1f}s {rel}: {tail}", flush=True)
    killed = sum(r["status"] == "killed" for r in results)
    survived = [r for r in results if r["status"] == "survived"]
    stale = [r for r in results if r["status"] == "stale"]
    counted = killed + len(survived)
    rate = killed / counted if counted else float("nan")
    print(f"\nkilled {killed} / {counted} ({100 * rate:.1f}%), survived {len(survived)}, stale {len(stale)}")
    for r in survived:
        print(f"  survived: {r['name']} ({r['file']}): {r['old']!r} -> {r['new']!r}")
    if args.json:
        Path(args.json).write_text(json.dumps({"killed": killed, "counted": counted, "rate": rate,
                                               "results": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
