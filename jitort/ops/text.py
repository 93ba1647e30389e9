"""Text featurization: TfIdfVectorizer."""

from __future__ import annotations

import numpy as np

from .registry import op


def _pool_ngrams(pool: list, ngram_counts: list[int], max_n: int) -> dict[tuple, int]:
    """Map each pooled n-gram (as a tuple) to its index in pool order."""
    table: dict[tuple, int] = {}
    k = 0
    for n in range(1, len(ngram_counts) + 1):
        start = ngram_counts[n - 1]
        end = ngram_counts[n] if n < len(ngram_counts) else len(pool)
        for i in range(start, end, n):
            table[tuple(pool[i:i + n])] = k
            k += 1
    return table


@op("TfIdfVectorizer", since=9)
def tfidf_vectorizer(x, *, max_gram_length, max_skip_count, min_gram_length, mode, ngram_counts,
                     ngram_indexes, pool_int64s=None, pool_strings=None, weights=None):
    """Counts of pooled n-grams (n in [min, max], up to max_skip_count skips) per row."""
    if (pool_int64s is None) == (pool_strings is None):
        raise ValueError("exactly one of pool_int64s and pool_strings must be set")
    pool = list(pool_int64s) if pool_int64s is not None else list(pool_strings)
    table = _pool_ngrams(pool, list(ngram_counts), max_gram_length)
    width = max(ngram_indexes) + 1 if ngram_indexes else 0
    rows = x.reshape(1, -1) if x.ndim <= 1 else x.reshape(x.shape[0], -1)
    counts = np.zeros((rows.shape[0], len(table)), dtype=np.float32)
    for r, row in enumerate(rows):
        seq = [int(v) for v in row] if pool_int64s is not None else list(row)
        for n in range(max(min_gram_length, 1), max_gram_length + 1):
            skips = range(max_skip_count + 1) if n > 1 else (0,)
            for s in skips:
                step = s + 1
                span = (n - 1) * step
                for i in range(len(seq) - span):
                    k = table.get(tuple(seq[i:i + span + 1:step]))
                    if k is not None:
                        counts[r, k] += 1
    out = np.zeros((rows.shape[0], width), dtype=np.float32)
    w = np.asarray(weights, np.float32) if weights else np.ones(len(table), np.float32)
    idx = np.asarray(ngram_indexes[:len(table)], dtype=np.int64)
    if mode == "TF":
        vals = counts
    elif mode == "IDF":
        vals = (counts > 0).astype(np.float32) * w[: len(table)]
    elif mode == "TFIDF":
        vals = counts * w[: len(table)]
    else:
        raise ValueError(f"mode must be TF, IDF or TFIDF, got {mode!r}")
    out[:, idx] = vals[:, : len(idx)]
    return out.reshape(width) if x.ndim <= 1 else out
