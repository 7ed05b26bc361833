"""The paper's expert-PEFT set-up: one reference language per family, selection over that pool only, the official
selected_experts.json shape, and `langmoe routing` / `adapt` agreeing on the experts."""

from __future__ import annotations

import numpy as np
import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.routing.adapt import select_experts
from langmoe.methods.routing.analysis import routing_metrics
from langmoe.methods.routing.collect import RoutingCounts
from langmoe.methods.routing.selection import (
    DEFAULT_POOL,
    check_router_still_chooses,
    family_of,
    reference_pool,
    selected_experts_json,
)


def test_default_pool_is_one_language_per_family():
    fams = [family_of(x) for x in DEFAULT_POOL]
    assert len(set(fams)) == len(fams) == 7


def test_reference_pool_drops_siblings_and_the_childs_family():
    # gl (Romance) via pt: es/fr/it are pt's siblings and leave; de loses to en (Germanic, first)
    assert reference_pool("pt", "gl", ["pt", "es", "en", "de", "ru", "fr", "uk", "gl"]) == ["pt", "en", "ru"]
    # child of another family than its parent: the child's family contributes nobody
    assert reference_pool("ru", "pl", ["en", "cs", "fi"]) == ["ru", "en", "fi"]
    with pytest.raises(LangmoeError, match="only the parent"):
        reference_pool("pt", "gl", ["es", "fr"])


def test_router_must_keep_a_choice():
    check_router_still_chooses({3: [0, 1, 2]}, {3: 2}, "ssft")
    with pytest.raises(LangmoeError, match="allows 2 expert"):
        check_router_still_chooses({3: [0, 1]}, {3: 2}, "ssft")


# shares at both layers, E = 4; rows: es (parent of gl), pt (sibling), en, gl (child)
ROWS = {"es": [50, 30, 10, 10], "pt": [45, 5, 40, 10], "en": [10, 20, 30, 40], "gl": [25, 25, 25, 25]}


def _rc(top_k=1):
    langs = list(ROWS)
    c = [[ROWS[x]] * 2 for x in langs]
    return RoutingCounts(langs=langs, layers=[1, 3], num_experts=[4, 4], top_k=[top_k, top_k], counts=c,
                         tokens={x: 100 for x in langs})


def test_selection_over_the_pool_by_hand():
    rc = _rc()
    # pool for gl via es: es, en (pt is es's sibling, gl the child). shares es .5 .3 .1 .1, en .1 .2 .3 .4
    # gaps: e0 es .4, e1 es .1, e2 en .2, e3 en .3  -> es specific at alpha .05: {0, 1}
    assert select_experts(rc, "seft", "es", "gl", None, alpha=0.05) == {1: [0, 1], 3: [0, 1]}
    # over every language instead (the old pool), pt would take e2 and es's e0 gap would be .05 only
    # shared by mean share over es, en: e0 .3, e1 .25, e3 .25, e2 .2 -> top-3 e0, e1, e3 (stable ties)
    assert select_experts(rc, "ssft", "es", "gl", 1, alpha=0.05, n_shared=3) == {3: [0, 1, 3]}
    sel = selected_experts_json(rc.array(), rc.langs, rc.layers, {"gl": "es"}, [0, 1], alpha=0.05)
    assert sel["_meta"] == {"alpha": 0.05, "target_layers": [1, 3], "hr_languages": ["en", "es"],
                            "parents": {"gl": "es"}, "pools": {"gl": ["es", "en"]}}
    assert sel["shared_experts"]["k1"] == {"1": [0], "3": [0]}
    assert sel["gl"]["seft"] == {"1": [0, 1], "3": [0, 1]}
    assert sel["gl"]["ssft_k3"] == {"1": [0, 1, 3], "3": [0, 1, 3]}
    assert set(sel["gl"]) == {"seft", "ssft_k1", "ssft_k3", "ssft_k5"}


@pytest.mark.parametrize("child,parent", [("gl", "es"), ("gl", "pt")])
def test_routing_metrics_and_adapt_agree(child, parent):
    rng = np.random.default_rng(0)
    langs = ["en", "es", "pt", "ru", "uk", "fi", "gl"]
    c = rng.integers(1, 200, size=(len(langs), 3, 8)).astype(float)
    rc = RoutingCounts(langs=langs, layers=[0, 1, 2], num_experts=[8] * 3, top_k=[0] * 3, counts=c.tolist(),  # no refusal
                       tokens={x: 1000 for x in langs})
    m = routing_metrics(rc, alpha=0.01, pairs={child: parent})
    sel = m["selected_experts"]
    assert sel["_meta"]["target_layers"] == [1, 2]
    seft = select_experts(rc, "seft", parent, child, None, alpha=0.01)
    assert {str(k): v for k, v in seft.items()} == {k: sorted(v) for k, v in sel[child]["seft"].items()}
    ssft = select_experts(rc, "ssft", parent, child, None, alpha=0.01, n_shared=3)
    assert {str(k): v for k, v in ssft.items()} == {k: sorted(v) for k, v in sel[child]["ssft_k3"].items()}
    if parent == "es":  # the parent is in the default pool and the child is of its family: the same pool
        assert m["reference_pool"] == ["en", "es", "ru", "fi"]
        assert {k: v[parent] for k, v in m["pool_specific_experts"].items() if k != "0"} == \
            {str(k): v for k, v in seft.items()}


def test_ssft_keeps_a_layer_without_specific_experts_seft_refuses():
    # layer 1: es leads nothing (en leads every expert); layer 3: es leads e0 and e1 as in ROWS
    flat = {"es": [25, 25, 25, 25], "pt": [25, 25, 25, 25], "en": [40, 40, 40, 40], "gl": [25, 25, 25, 25]}
    langs = list(ROWS)
    rc = RoutingCounts(langs=langs, layers=[1, 3], num_experts=[4, 4], top_k=[1, 1],
                       counts=[[flat[x], ROWS[x]] for x in langs], tokens={x: 100 for x in langs})
    # layer 1 shares are equal for es and en (all .25): no gap, no specific expert; shared top-2: e0, e1
    assert select_experts(rc, "ssft", "es", "gl", None, alpha=0.05, n_shared=2) == {1: [0, 1], 3: [0, 1]}
    with pytest.raises(LangmoeError, match="no specific experts at alpha=0.05 in layer 1") as e:
        select_experts(rc, "seft", "es", "gl", None, alpha=0.05)
    # es leads no expert of layer 1 (largest gap 0): a smaller alpha cannot help, and the message says so
    assert "(largest gap 0)" in str(e.value) and "so no --alpha selects one: use --mode ssft" in str(e.value)
    assert "smaller --alpha" not in str(e.value)
