"""Random-projection sketches: streaming = one-shot, cosines preserved with error ~ 1/sqrt(k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.sketch import (
    Sketcher,
    _chunk_matrix,
    cosine_matrix,
    sketch_error,
    sketch_rows,
    sketch_vector,
)

torch.set_num_threads(1)


def test_sketch_equals_explicit_projection():
    """The streamed sketch is exactly R^T v / sqrt(k) with R built from the same chunks."""
    d, k, c = 50, 8, 16
    v = torch.randn(d, generator=torch.Generator().manual_seed(1))
    r = torch.cat([_chunk_matrix(3, i, c, k) for i in range(4)])[:d]
    expected = (v.double() @ r.double()) / np.sqrt(k)
    got = sketch_vector(v, k, seed=3, chunk_rows=c)
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_sketch_independent_of_how_the_vector_is_split():
    v = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    whole = sketch_vector(v, 32, seed=5, chunk_rows=64)
    pieces = sketch_vector([v[:7], v[7:300].reshape(293, 1), v[300:]], 32, seed=5, chunk_rows=64)
    assert torch.allclose(whole, pieces, atol=1e-5)
    s = Sketcher(32, seed=5, chunk_rows=64)
    for i in range(0, 1000, 129):
        s.update(v[i:i + 129])
    assert torch.allclose(whole, s.result(), atol=1e-5)
    assert not torch.allclose(whole, sketch_vector(v, 32, seed=6, chunk_rows=64))  # the seed matters
    batch = sketch_rows(torch.stack([v, -2 * v]), 32, seed=5, chunk_rows=64)
    assert torch.allclose(batch[0], whole, atol=1e-5) and torch.allclose(batch[1], -2 * whole, atol=1e-4)


def test_cosine_matrix_hand_values():
    s = cosine_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    assert np.allclose(s, [[1, 2**-0.5, -1], [2**-0.5, 1, -2**-0.5], [-1, -2**-0.5, 1]])


def test_error_shrinks_like_one_over_sqrt_k():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4000, generator=g)
    # vectors with a spread of cosines to each other (shared component + own noise)
    vecs = [base * a + torch.randn(4000, generator=g) for a in (0.0, 0.5, 1.0, 2.0, 0.3, 1.5)]
    errs = {k: np.mean([sketch_error(vecs, k, seed=s).mean_abs for s in range(3)]) for k in (16, 256)}
    ratio = errs[16] / errs[256]
    assert 2.5 < ratio < 6.5, (errs, ratio)  # sqrt(256/16) = 4
    for k, e in errs.items():
        assert 0.05 < e * np.sqrt(k) < 1.0, (k, e)
    e = sketch_error({"a": vecs[0], "b": vecs[1]}, 512)
    assert e.pairs == 1 and e.max_abs == pytest.approx(e.mean_abs)


def test_bad_inputs():
    with pytest.raises(LangmoeError):
        Sketcher(0)
    with pytest.raises(LangmoeError):
        sketch_error([torch.ones(3)], 4)


def test_count_sketch_equals_explicit_buckets_and_signs():
    """s[h(i)] += σ(i) v_i with the buckets and signs of the chunk hash; streaming = one shot, any split."""
    from langmoe.methods.dmoe.sketch import CountSketcher, _chunk_hash

    d, k, c = 300, 16, 64
    v = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.zeros(k, dtype=torch.float64)
    for chunk in range(0, d, c):
        bucket, sign = _chunk_hash(9, chunk // c, c, k)
        n = min(c, d - chunk)
        expected.index_add_(0, bucket[:n], sign[:n] * v[chunk:chunk + n])
    s = CountSketcher(k, seed=9, chunk_rows=c)
    kept = v.clone()
    for i in range(0, d, 37):
        s.update(v[i:i + 37])
    assert torch.allclose(s.result().double(), expected, atol=1e-5)
    assert torch.equal(v, kept)  # the input is read, never written
    assert torch.allclose(sketch_vector(v, k, seed=9, method="count"),
                          sketch_vector([v[:150], v[150:]], k, seed=9, method="count"), atol=1e-5)


def test_count_sketch_error_shrinks_like_one_over_sqrt_k():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20000, generator=g)
    vecs = [base * a + torch.randn(20000, generator=g) for a in (0.0, 0.5, 1.0, 2.0, 0.3, 1.5)]
    errs = {k: np.mean([sketch_error(vecs, k, seed=s, method="count").mean_abs for s in range(3)])
            for k in (16, 256)}
    assert 2.5 < errs[16] / errs[256] < 6.5, errs
    assert errs[256] < 0.06


def test_make_sketcher_rejects_an_unknown_method():
    from langmoe.methods.dmoe.sketch import make_sketcher

    with pytest.raises(LangmoeError, match="count or gaussian"):
        make_sketcher("fft", 8)
