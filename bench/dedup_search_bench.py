"""Leak search at scale: 1M query vectors against 100k indexed ones, 512-d, clustered.

Side by side in one run on the same data:
- NumPy brute force (chunked matrix products + top-k; no queries x index matrix in memory),
- FAISS flat (exact) and FAISS IVF-Flat as the dedup stage builds it (`build_index`).
The exact searches run on a sample of the queries and are scaled to all of them (their work
is linear in the number of queries); IVF runs on every query. Recall of IVF is measured
against the exact result on the sample: pairs above the threshold, and the top-1 neighbour.
Peak resident memory is reported: the vectors themselves plus one chunk.

    python bench/dedup_search_bench.py [--queries 1000000] [--index 100000] [--dim 512]
        [--exact-sample 20000] [--out bench/results/dedup_search.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import faiss
import numpy as np
from results_io import write_results

from tvts.dedup.search import build_index, search

THRESHOLD = 0.9
K = 8
CHUNK = 16_384  # FAISS query chunk: it returns only k results per query
NUMPY_CHUNK = 1024  # a chunk x index similarity block (400 MB at 100k) and its argpartition


def clustered(n: int, centres: np.ndarray, rng: np.random.Generator, noise: float,
              chunk: int = 100_000) -> np.ndarray:
    """Unit vectors around random cluster centres, made chunk by chunk."""
    out = np.empty((n, centres.shape[1]), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(len(centres), size=m)]
        x = x + noise * rng.standard_normal((m, centres.shape[1]), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def numpy_search(index: np.ndarray, queries: np.ndarray, k: int, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Brute force, `NUMPY_CHUNK` queries at a time: (query row, index row) above the
    threshold."""
    qs, rs = [], []
    for s in range(0, len(queries), NUMPY_CHUNK):
        sims = queries[s:s + NUMPY_CHUNK] @ index.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        qi, j = np.nonzero(top_sims >= threshold)
        qs.append(qi + s)
        rs.append(top[qi, j])
    return np.concatenate(qs), np.concatenate(rs)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--index", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--copies", type=float, default=0.02, help="share of queries that are "
                    "near-copies of indexed vectors (the leaks to find)")
    ap.add_argument("--exact-sample", type=int, default=20_000)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--out", default="bench/results/dedup_search.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    threads = faiss.omp_get_max_threads()

    t = time.perf_counter()
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    db = clustered(args.index, centres, rng, noise=0.6)
    queries = clustered(args.queries, centres, rng, noise=0.6)
    n_copies = int(args.copies * args.queries)
    src = rng.choice(args.index, size=n_copies, replace=False)
    noisy = db[src] + 0.01 * rng.standard_normal((n_copies, args.dim), dtype=np.float32)
    queries[:n_copies] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    queries = queries[rng.permutation(len(queries))]
    t_data = time.perf_counter() - t
    sample = queries[rng.choice(len(queries), size=min(args.exact_sample, len(queries)),
                                replace=False)]
    scale = len(queries) / len(sample)

    t = time.perf_counter()
    nq, nr = numpy_search(db, sample, K, THRESHOLD)
    t_numpy = (time.perf_counter() - t) * scale

    t = time.perf_counter()
    flat = build_index(db, exact_max=len(db))
    fq, fr, _ = search(flat, sample, K, THRESHOLD, chunk=CHUNK)
    t_flat = (time.perf_counter() - t) * scale

    t = time.perf_counter()
    ivf = build_index(db, exact_max=0, nprobe=args.nprobe)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    iq_all, _, _ = search(ivf, queries, K, THRESHOLD, chunk=CHUNK)
    t_ivf = time.perf_counter() - t
    sq, sr, _ = search(ivf, sample, K, THRESHOLD, chunk=CHUNK)

    exact = set(zip(fq.tolist(), fr.tolist(), strict=True))
    approx = set(zip(sq.tolist(), sr.tolist(), strict=True))
    brute = set(zip(nq.tolist(), nr.tolist(), strict=True))
    _, top_exact = flat.index.search(sample, 1)
    _, top_ivf = ivf.index.search(sample, 1)
    result = {
        "queries": len(queries), "indexed": len(db), "dim": args.dim,
        "clusters": args.clusters, "near_copies": n_copies, "threshold": THRESHOLD, "k": K,
        "faiss_threads": threads, "cpu_count": os.cpu_count(),
        "exact_sample": len(sample), "index": ivf.kind,
        "seconds_all_queries": {
            "numpy_bruteforce": round(t_numpy, 1), "faiss_flat": round(t_flat, 1),
            "faiss_ivf": round(t_ivf, 1), "faiss_ivf_build": round(t_build, 1),
            "note": "numpy and flat measured on exact_sample queries, scaled linearly",
        },
        "speedup_vs_numpy": {"faiss_flat": round(t_numpy / t_flat, 2),
                             "faiss_ivf": round(t_numpy / (t_ivf + t_build), 1)},
        "recall_ivf_pairs": round(len(exact & approx) / max(1, len(exact)), 4),
        "recall_ivf_top1": round(float(np.mean(top_exact[:, 0] == top_ivf[:, 0])), 4),
        "numpy_equals_faiss_flat": len(brute ^ exact) / max(1, len(exact)) < 1e-3,
        "pairs_exact_on_sample": len(exact), "pairs_ivf_all_queries": len(iq_all),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "vectors_gb": round((queries.nbytes + db.nbytes) / 1e9, 2),
        "data_generation_s": round(t_data, 1),
    }
    print(json.dumps(result, indent=2))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
