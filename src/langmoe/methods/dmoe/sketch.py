"""Random-projection sketches of long language vectors (Johnson–Lindenstrauss), computed streaming.

A DMoE language vector is the concatenation of FFN weight deltas (last 3 layers of a 7B model: ~10^9 numbers per
language). Cosines between languages are all that is needed, and a Gaussian projection `s = Rᵀv / √k` with
`R ∈ R^{d×k}` preserves them up to an error of about `(1 − cos²)/√k`. `R` is never materialised: rows are
generated chunk by chunk from `(seed, chunk index)`, so any split of `v` into pieces, in any process, gives the
same sketch, and memory is `chunk_rows × k`.

The Gaussian sketch costs `d × k` multiply-adds (minutes per language at 10^9 numbers). The count sketch
(`CountSketcher`, Charikar et al. 2002) adds each element, with a random sign, into one of `k` random buckets: it
costs `d` additions whatever `k`, so `k` can be large (65,536 buckets: cosine error ≈ 1/256) and is what the probe
uses by default for vectors too long to keep exact. Inner products are preserved in expectation (no scaling).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from langmoe.errors import LangmoeError

DEFAULT_CHUNK_ROWS = 8192
COUNT_CHUNK_ROWS = 1 << 20


def _chunk_matrix(seed: int, chunk: int, rows: int, k: int) -> torch.Tensor:
    """Rows [chunk*rows, (chunk+1)*rows) of R (standard normal), a pure function of (seed, chunk)."""
    key = int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    g = torch.Generator().manual_seed(key)
    return torch.randn(rows, k, generator=g, dtype=torch.float32)


class Sketcher:
    """Accumulates `Rᵀ v / √k` for one vector `v` fed in consecutive pieces (`update`), in float64."""

    def __init__(self, k: int, seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        if int(k) < 1:
            raise LangmoeError(f"sketch dimension must be at least 1, got {k}")
        if int(chunk_rows) < 1:
            raise LangmoeError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.k, self.seed, self.chunk_rows = int(k), int(seed), int(chunk_rows)
        self.offset = 0  # global index of the next element of v
        self._acc = torch.zeros(self.k, dtype=torch.float64)

    def update(self, piece: torch.Tensor) -> None:
        """Feed the next elements of v (any shape; flattened)."""
        x = piece.detach().reshape(-1).to(torch.float32).cpu()
        start, n, c = self.offset, x.numel(), self.chunk_rows
        pos = 0
        while pos < n:
            gi = start + pos
            chunk, row = divmod(gi, c)
            take = min(c - row, n - pos)
            r = _chunk_matrix(self.seed, chunk, c, self.k)[row:row + take]
            self._acc += (x[pos:pos + take] @ r).to(torch.float64)
            pos += take
        self.offset += n

    def result(self) -> torch.Tensor:
        """The sketch (float32, length k); scaled by 1/√k so that norms are preserved in expectation."""
        return (self._acc / float(np.sqrt(self.k))).to(torch.float32)


def _chunk_hash(seed: int, chunk: int, rows: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Buckets and signs of elements [chunk*rows, (chunk+1)*rows): a pure function of (seed, chunk)."""
    key = int(np.random.SeedSequence([int(seed), int(chunk), 1]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    g = torch.Generator().manual_seed(key)
    bucket = torch.randint(k, (rows,), generator=g)
    sign = torch.randint(2, (rows,), generator=g, dtype=torch.int8).to(torch.float64).mul_(2).sub_(1)
    return bucket, sign


class CountSketcher:
    """Accumulates the count sketch `s[h(i)] += σ(i) v_i` of one vector fed in consecutive pieces, in float64:
    `d` additions in all, so `k` may be large."""

    def __init__(self, k: int, seed: int = 0, chunk_rows: int = COUNT_CHUNK_ROWS):
        if int(k) < 1:
            raise LangmoeError(f"sketch dimension must be at least 1, got {k}")
        if int(chunk_rows) < 1:
            raise LangmoeError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.k, self.seed, self.chunk_rows = int(k), int(seed), int(chunk_rows)
        self.offset = 0
        self._acc = torch.zeros(self.k, dtype=torch.float64)
        self._hash: tuple[int, torch.Tensor, torch.Tensor] | None = None  # the last chunk's (many small pieces)

    def _chunk(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._hash is None or self._hash[0] != chunk:
            self._hash = (chunk, *_chunk_hash(self.seed, chunk, self.chunk_rows, self.k))
        return self._hash[1], self._hash[2]

    def update(self, piece: torch.Tensor) -> None:
        """Feed the next elements of v (any shape; flattened)."""
        x = piece.detach().reshape(-1).cpu()
        start, n, c = self.offset, x.numel(), self.chunk_rows
        pos = 0
        while pos < n:
            chunk, row = divmod(start + pos, c)
            take = min(c - row, n - pos)
            bucket, sign = self._chunk(chunk)
            vals = x[pos:pos + take].to(torch.float64) * sign[row:row + take]  # never in place: x may be v
            self._acc.index_add_(0, bucket[row:row + take], vals)
            pos += take
        self.offset += n

    def result(self) -> torch.Tensor:
        """The sketch (float32, length k)."""
        return self._acc.to(torch.float32)


SketchMethod = Literal["count", "gaussian"]


def make_sketcher(method: SketchMethod, k: int, seed: int = 0) -> Sketcher | CountSketcher:
    """A streaming sketcher of the given method (`count`: d additions; `gaussian`: d × k multiply-adds)."""
    if method == "count":
        return CountSketcher(k, seed)
    if method == "gaussian":
        return Sketcher(k, seed)
    raise LangmoeError(f"sketch method must be count or gaussian, got {method!r}")


def sketch_vector(pieces: torch.Tensor | Iterable[torch.Tensor], k: int, seed: int = 0,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS, method: SketchMethod = "gaussian") -> torch.Tensor:
    """Sketch of the concatenation of `pieces` (or of one tensor)."""
    s = Sketcher(k, seed, chunk_rows) if method == "gaussian" else make_sketcher(method, k, seed)
    for p in [pieces] if isinstance(pieces, torch.Tensor) else pieces:
        s.update(p)
    return s.result()


def sketch_rows(matrix: torch.Tensor, k: int, seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Sketch every row of `matrix` [n, d] at once (each chunk of R generated once for all rows); row i of the
    result equals `sketch_vector(matrix[i], k, seed)`."""
    if int(k) < 1:
        raise LangmoeError(f"sketch dimension must be at least 1, got {k}")
    x = matrix.detach().to(torch.float32).cpu()
    n, d = x.shape
    acc = torch.zeros(n, int(k), dtype=torch.float64)
    for chunk, start in enumerate(range(0, d, chunk_rows)):
        stop = min(start + chunk_rows, d)
        r = _chunk_matrix(seed, chunk, chunk_rows, int(k))[: stop - start]
        acc += (x[:, start:stop] @ r).to(torch.float64)
    return (acc / float(np.sqrt(int(k)))).to(torch.float32)


def cosine_matrix(vectors: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """Pairwise cosine similarity of the rows (float64). A zero row has cosine 0 with everything but itself."""
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float64) if not isinstance(vectors, torch.Tensor)
                        else vectors.detach().cpu().to(torch.float64))
    if v.dim() != 2:
        raise LangmoeError(f"cosine_matrix needs a [n, d] matrix, got shape {tuple(v.shape)}")
    norms = v.norm(dim=1, keepdim=True)
    u = v / norms.clamp_min(1e-300)
    s = (u @ u.T).clamp(-1.0, 1.0).numpy()
    np.fill_diagonal(s, 1.0)
    return s


class SketchError(BaseModel):
    """How far sketched cosines are from exact ones over all off-diagonal pairs."""

    k: int
    pairs: int
    max_abs: float
    mean_abs: float


def sketch_error(exact_vectors: Mapping[str, torch.Tensor] | torch.Tensor | Sequence[torch.Tensor], k: int,
                 seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS, method: SketchMethod = "gaussian"
                 ) -> SketchError:
    """Sketch each vector with dimension `k` and compare the cosine matrices (exact vs sketched)."""
    if isinstance(exact_vectors, Mapping):
        rows = list(exact_vectors.values())
    elif isinstance(exact_vectors, torch.Tensor):
        rows = list(exact_vectors)
    else:
        rows = list(exact_vectors)
    if len(rows) < 2:
        raise LangmoeError("sketch_error needs at least 2 vectors")
    exact = torch.stack([r.reshape(-1).to(torch.float64) for r in rows])
    if method == "gaussian":
        sk = sketch_rows(exact, k, seed, chunk_rows)
    else:
        sk = torch.stack([sketch_vector(r, k, seed, method=method) for r in exact])
    a, b = cosine_matrix(exact), cosine_matrix(sk)
    iu = np.triu_indices(len(rows), 1)
    err = np.abs(a[iu] - b[iu])
    return SketchError(k=int(k), pairs=int(err.size), max_abs=float(err.max()), mean_abs=float(err.mean()))
