"""The saved format: folders written before the route-override slot (version 2: `classifier` / `language_gate`
fields, `router.classifier.*` / `router.gate.*` weights) load with the logits they were saved with, and saving or
`langmoe convert` writes them as version 3 (`route_override`, `router.override.*`)."""

import json
from pathlib import Path

import pytest
import torch
from moe_fixtures import tokens

from langmoe.errors import LangmoeError
from langmoe.models.moe_format import STRUCTURE_VERSION, MoEStructure, upgraded_structure
from langmoe.models.moe_io import (
    folder_kind,
    load_moe_pretrained,
    read_safetensors_folder,
    save_moe_pretrained,
)
from langmoe.models.overrides.classifier import RoutingClassifier
from langmoe.models.overrides.gate import LanguageGate

DATA = Path(__file__).resolve().parent / "data"


def close_to_saved(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The saved logits were computed on another CPU: float kernels (AVX2 / AVX-512 / AMX) round differently at
    ~1e-7, so the check across machines is to 1e-5 (a wrong weight or route moves logits by orders more);
    comparisons made on this machine stay bit for bit."""
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kind", [("v2_classifier", RoutingClassifier), ("v2_gate", LanguageGate)])
def test_version2_folders_load_with_their_saved_logits_and_resave_as_version3(tmp_path, name, kind):
    folder = DATA / name
    raw = json.loads((folder / "config.json").read_text())
    assert raw["langmoe"]["version"] == 2 and folder_kind(folder) == "native"
    model = load_moe_pretrained(folder)
    expected = torch.load(folder / "expected_logits.pt")  # computed by the version-2 code when it wrote the folder
    with torch.no_grad():
        got = model(tokens()).logits
    close_to_saved(got, expected)
    overrides = [m.router.override for m in model.modules() if hasattr(m, "router")]
    assert any(isinstance(o, kind) for o in overrides)
    save_moe_pretrained(model, None, tmp_path / "v3")
    written = json.loads((tmp_path / "v3" / "config.json").read_text())["langmoe"]
    assert written["version"] == STRUCTURE_VERSION == 3
    assert all("classifier" not in s and "language_gate" not in s for s in written["layers"].values())
    keys = read_safetensors_folder(tmp_path / "v3").keys()
    assert any(".router.override." in k for k in keys)
    assert not any(".router.classifier." in k or ".router.gate." in k for k in keys)
    with torch.no_grad():
        assert torch.equal(load_moe_pretrained(tmp_path / "v3")(tokens()).logits, got)  # same machine: bit for bit


def test_a_version2_gate_folder_keeps_generating_without_the_cache():
    assert load_moe_pretrained(DATA / "v2_gate").generation_config.use_cache is False


def test_convert_rewrites_a_version2_folder(tmp_path):
    from langmoe.cli import main

    assert main(["convert", "--model", str(DATA / "v2_gate"), "--out", str(tmp_path / "n")]) == 0
    layers = json.loads((tmp_path / "n" / "config.json").read_text())["langmoe"]["layers"]
    assert layers["0"]["route_override"] == {"kind": "language_gate", "first_new": 2, "num_new": 2, "mode": "prefix"}
    with torch.no_grad():
        converted = load_moe_pretrained(tmp_path / "n")(tokens()).logits
        assert torch.equal(converted, load_moe_pretrained(DATA / "v2_gate")(tokens()).logits)
    close_to_saved(converted, torch.load(DATA / "v2_gate" / "expected_logits.pt"))


def test_older_structures_are_read_into_one_route_override_entry():
    v2 = {"version": 2, "layers": {"1": {"num_experts": 3, "top_k": 2, "renormalize": True, "frozen_expert0": True,
                                         "classifier": True, "classifier_mode": "sequence", "language_gate": None}}}
    s = MoEStructure.parse(v2)
    assert s.version == 3 and s.layers[1].route_override == {"kind": "classifier", "mode": "sequence"}
    v1 = {"layers": {"0": {"num_experts": 2, "top_k": 1}}}  # version 1 had no version key and no override
    assert upgraded_structure(v1)["layers"]["0"]["route_override"] is None
    with pytest.raises(LangmoeError, match="route_override"):
        MoEStructure.parse({"version": 3, "layers": {"0": {"num_experts": 2, "top_k": 1, "route_override": {}}}})
