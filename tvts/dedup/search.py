"""Inner-product search of query frames against the indexed downstream frames (FAISS).

Vectors are L2-normalised, so inner product = cosine similarity. Up to `exact_max` indexed
vectors the index is flat (exact); above, IVF-Flat with about 4 sqrt(N) lists, `nprobe` of
them searched, and its recall measured against an exact search on a sample of queries.
Queries go in chunks and only pairs above the threshold are kept: memory stays bounded by
the chunk, never a queries x index matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

QUERY_CHUNK = 65_536


@dataclass
class Index:
    index: faiss.Index
    kind: str  # "flat" | "ivf<nlist>,nprobe<n>"

    @property
    def exact(self) -> bool:
        return self.kind == "flat"


def build_index(vectors: np.ndarray, exact_max: int, nprobe: int = 16, seed: int = 0) -> Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        return Index(index, "flat")
    nlist = int(min(65_536, max(16, 4 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    # FAISS wants 39+ training points per list; more buys little
    rng = np.random.default_rng(seed)
    train = vectors[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
    index.train(train)
    index.add(vectors)
    index.nprobe = min(nprobe, nlist)
    return Index(index, f"ivf{nlist},nprobe{index.nprobe}")


def _above(sims: np.ndarray, rows: np.ndarray, threshold: float, start: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, index row, similarity) of the k-NN results at or above the threshold."""
    qi, j = np.nonzero((sims >= threshold) & (rows >= 0))
    return (qi + start).astype(np.int64), rows[qi, j].astype(np.int64), sims[qi, j]


def search_chunks(index: Index, queries: np.ndarray, k: int, threshold: float,
                  chunk: int = QUERY_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(query row, index row, similarity) of the `k` nearest with similarity >= threshold."""
    k = min(k, index.index.ntotal)
    if k == 0:
        return
    for start in range(0, len(queries), chunk):
        q = np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32)
        sims, rows = index.index.search(q, k)
        yield _above(sims, rows, threshold, start)


def search(index: Index, queries: np.ndarray, k: int, threshold: float,
           chunk: int = QUERY_CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = list(search_chunks(index, queries, k, threshold, chunk))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class Recall:
    queries: int
    exact_pairs: int  # pairs above the threshold the exact search finds
    found_pairs: int  # ... that the index finds too
    top1: float  # share of queries whose exact nearest neighbour the index returns first

    @property
    def pairs(self) -> float | None:
        return self.found_pairs / self.exact_pairs if self.exact_pairs else None


def measure_recall(index: Index, vectors: np.ndarray, queries: np.ndarray, k: int,
                   threshold: float, sample: int, seed: int = 0) -> Recall:
    """The approximate index against an exact flat search, on a sample of the queries."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(queries), size=min(sample, len(queries)), replace=False))
    q = queries[pick]
    q = np.ascontiguousarray(q, np.float32)
    exact = build_index(vectors, exact_max=len(vectors))
    ka = min(k, len(vectors))
    pairs, firsts = [], []
    for idx in (exact, index):  # one k-NN search each gives both figures
        sims, rows = idx.index.search(q, ka)
        eq, er, _ = _above(sims, rows, threshold)
        pairs.append(set(zip(eq.tolist(), er.tolist(), strict=True)))
        firsts.append(rows[:, 0])
    want, got = pairs
    top1 = float(np.mean(firsts[0] == firsts[1])) if len(q) else 1.0
    return Recall(len(q), len(want), len(want & got), top1)


@dataclass
class SplitIndex:
    """The indexed vectors in two indexes: colour views, searched by colour query frames, and
    luma views, searched by grey query frames; `*_rows` map index rows back to vector rows."""

    colour: Index
    colour_rows: np.ndarray
    luma: Index | None
    luma_rows: np.ndarray

    @property
    def kind(self) -> str:
        return self.colour.kind + ("" if self.luma is None else f" + luma {self.luma.kind}")


def build_split_index(vectors: np.ndarray, luma: np.ndarray, exact_max: int, nprobe: int = 16,
                      seed: int = 0) -> SplitIndex:
    """`luma`: bool per vector, True for the luma views."""
    colour_rows, luma_rows = np.flatnonzero(~luma), np.flatnonzero(luma)
    colour = build_index(vectors[colour_rows], exact_max, nprobe, seed)
    grey = build_index(vectors[luma_rows], exact_max, nprobe, seed) if luma_rows.size else None
    return SplitIndex(colour, colour_rows, grey, luma_rows)


def search_split(index: SplitIndex, queries: np.ndarray, grey: np.ndarray, k: int,
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour query frames against the colour views, grey ones (`grey` True) against the luma
    views (or the colour views when there are none); rows are the arguments' rows."""
    parts = []
    for rows, idx, idx_rows in ((np.flatnonzero(~grey), index.colour, index.colour_rows),
                                (np.flatnonzero(grey), index.luma, index.luma_rows)):
        if idx is None:
            idx, idx_rows = index.colour, index.colour_rows
        if rows.size == 0:
            continue
        q, i, s = search(idx, queries[rows], k, threshold)
        parts.append((rows[q], idx_rows[i], s))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]
