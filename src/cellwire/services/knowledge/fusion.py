"""Combining full-text and vector hits: reciprocal rank fusion and Dify's weighted score.

Dify's weighted score (``WeightRerankRunner``) is ``vector_weight * cosine(query, chunk)``
plus ``keyword_weight * TF-IDF cosine`` of the query's keywords against each candidate's,
with the inverse document frequencies taken over the candidates. Keywords here are the
lower-cased words (Dify uses jieba's keyword extraction, which also drops stop words).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
#: The k of reciprocal rank fusion (Cormack et al.; LanceDB's and most engines' default).
RRF_K = 60


def rrf(*rankings: Sequence[str], k: int = RRF_K) -> dict[str, float]:
    """Each id's reciprocal-rank-fusion score over the rankings (best first in each)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank + 1)
    return scores


def keywords(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def keyword_scores(query: str, contents: Mapping[str, str]) -> dict[str, float]:
    """Dify's keyword score of each candidate: TF-IDF cosine against the query."""
    query_words = Counter(keywords(query))
    doc_words = {key: Counter(keywords(text)) for key, text in contents.items()}
    total = len(doc_words)
    df: Counter[str] = Counter()
    for counts in doc_words.values():
        df.update(set(counts))
    idf = {word: math.log((1 + total) / (1 + df[word])) + 1 for word in df}

    def tfidf(counts: Counter[str]) -> dict[str, float]:
        size = sum(counts.values()) or 1
        return {word: counts[word] / size * idf.get(word, 0.0) for word in counts}

    query_vector = tfidf(query_words)
    scores: dict[str, float] = {}
    for key, counts in doc_words.items():
        vector = tfidf(counts)
        dot = sum(query_vector[w] * vector.get(w, 0.0) for w in query_vector)
        norm = math.sqrt(sum(v * v for v in query_vector.values())) * \
            math.sqrt(sum(v * v for v in vector.values()))
        scores[key] = dot / norm if norm else 0.0
    return scores


def weighted(vector_scores: Mapping[str, float], keyword: Mapping[str, float], *,
             vector_weight: float, keyword_weight: float) -> dict[str, float]:
    """Dify's weighted score of every candidate in either mapping."""
    keys = set(vector_scores) | set(keyword)
    return {key: vector_weight * vector_scores.get(key, 0.0)
            + keyword_weight * keyword.get(key, 0.0) for key in keys}
