"""Random-projection sketches of long language vectors (Johnson–Lindenstrauss), computed streaming.

A DMoE language vector is the concatenation of FFN weight deltas (last 3 layers of a 7B model: ~10^9 numbers per
language). Cosines between languages are all that is needed, and a Gaussian projection `s = Rᵀv / √k` with
`R ∈ R^{d×k}` preserves them up to an error of about `(1 − cos²)/√k`. `R` is never materialised: rows are
generated chunk by chunk from `(seed, chunk index)`, so any split of `v` into pieces, in any process, gives the
same sketch, and memory is `chunk_rows × k`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel

from langmoe.errors import LangmoeError

DEFAULT_CHUNK_ROWS = 8192


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


def sketch_vector(pieces: torch.Tensor | Iterable[torch.Tensor], k: int, seed: int = 0,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Sketch of the concatenation of `pieces` (or of one tensor)."""
    s = Sketcher(k, seed, chunk_rows)
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
                 seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> SketchError:
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
    sk = sketch_rows(exact, k, seed, chunk_rows)
    a, b = cosine_matrix(exact), cosine_matrix(sk)
    iu = np.triu_indices(len(rows), 1)
    err = np.abs(a[iu] - b[iu])
    return SketchError(k=int(k), pairs=int(err.size), max_abs=float(err.max()), mean_abs=float(err.mean()))
