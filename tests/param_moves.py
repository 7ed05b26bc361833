"""What trained and what did not, parameter by parameter: shared by the "what trains" tests of every entry point.

`check_moves(before, after, rule)` walks EVERY named tensor of `before` (the same names must be in `after`) and asks
`rule(name)` whether it must have trained: True -> it must differ, False -> it must be bit-equal, None -> not
checked here (a row-level check elsewhere). Every wrong tensor is listed at once, so one failing run names the
whole wrongly frozen (or wrongly trained) group, not only its first member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def folder_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved HF folder (every `*.safetensors` file), by name."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no safetensors in {folder}"
    return out


def check_moves(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor],
                rule: Callable[[str], bool | None], what: str = "") -> dict[str, int]:
    """Assert, for every tensor, moved == rule(name); return {"moved": n, "kept": n, "skipped": n}."""
    assert set(before) == set(after), (what, sorted(set(before) ^ set(after))[:10])
    wrong, seen = [], {"moved": 0, "kept": 0, "skipped": 0}
    for name in sorted(before):
        want = rule(name)
        if want is None:
            seen["skipped"] += 1
            continue
        moved = not torch.equal(before[name], after[name])
        seen["moved" if want else "kept"] += 1
        if moved != bool(want):
            wrong.append(f"{name}: {'moved' if moved else 'did not move'}, should {'' if want else 'not '}train")
    assert not wrong, f"{what}: {len(wrong)} wrong\n  " + "\n  ".join(wrong)
    return seen


def moved_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Indices along dim 0 whose slice changed (expert rows of a fused tensor, router rows, embedding rows)."""
    return [i for i in range(before.shape[0]) if not torch.equal(before[i], after[i])]


def token_rows(tokenizer, chars: str) -> list[int]:
    """The vocabulary ids of single characters (the tiny worlds' char tokenizers)."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab[c] for c in chars)


def check_embedding_rows(before: torch.Tensor, after: torch.Tensor, trained: list[int], untouched: list[int],
                         what: str = "") -> None:
    """Input-embedding rows of tokens in the training data moved; rows of tokens it never holds are bit-equal
    (weight decay 0: such a row gets an exactly zero gradient, so AdamW leaves it as it was)."""
    moved = set(moved_rows(before, after))
    assert set(trained) <= moved, f"{what}: embedding rows {sorted(set(trained) - moved)} of trained tokens kept"
    assert not moved & set(untouched), f"{what}: embedding rows {sorted(moved & set(untouched))} of unseen tokens moved"
