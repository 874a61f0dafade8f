"""Evaluation metrics; each report is a plain dict that `json.dumps` accepts.

Conventions: a precision, recall or F1 whose denominator is zero is 0.0 inside per-label tables (as
scikit-learn's `zero_division=0`, so that averages stay defined), while a headline rate whose
denominator is zero (say `oos_recall` on data without out-of-scope rows) is None: there was nothing
to measure.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

NO_PREDICTION = "<none>"  # how a None prediction (the model gave no usable label) is counted and reported
SELECTIVE_COVERAGES = (0.5, 0.8, 0.9, 1.0)
ECE_BINS = 15


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _same_length(name: str, a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name}: {len(a)} gold items but {len(b)} predictions")


def classification_report(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    confidences: Sequence[float] | None = None,
    *,
    labels: Sequence[str] | None = None,
    oos_label: str | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label scores and the commonest confusions; OOS and calibration figures on request.

    `labels`: the labels macro-F1 averages over and `per_label` lists (labels nobody used get zeros);
    by default the labels present in `y_true` or `y_pred`. A None prediction counts as the label
    `NO_PREDICTION`. With `confidences`, `selective_accuracy[c]` is the accuracy on the fraction `c` of
    rows with the highest confidence (ceil(c·n) rows; ties keep input order), and `ece` is the expected
    calibration error over 15 equal-width bins: Σ_bins |accuracy − mean confidence| · (rows in bin / n).
    """
    _same_length("classification_report", y_true, y_pred)
    if not y_true:
        raise ValueError("classification_report: no rows")
    true = [str(t) for t in y_true]
    pred = [NO_PREDICTION if p is None else str(p) for p in y_pred]
    n = len(true)
    correct = np.array([t == p for t, p in zip(true, pred, strict=True)])
    label_set = list(labels) if labels is not None else sorted(set(true) | set(pred))

    hits = Counter(t for t, p in zip(true, pred, strict=True) if t == p)
    per_label = _scores_per_key(label_set, hits, Counter(pred), Counter(true))

    confusions = Counter((t, p) for t, p in zip(true, pred, strict=True) if t != p)
    top = sorted(confusions.items(), key=lambda item: (-item[1], item[0]))[:10]
    report: dict[str, Any] = {
        "n": n,
        "accuracy": float(correct.mean()),
        "macro_f1": _macro_f1(per_label),
        "per_label": per_label,
        "top_confusions": [{"true": t, "pred": p, "count": c} for (t, p), c in top],
        "most_over_answered": _most_over_answered(Counter(true), Counter(pred)),
    }

    if oos_label is not None:
        is_oos = np.array([t == oos_label for t in true])
        said_oos = np.array([p == oos_label for p in pred])
        report["in_scope_accuracy"] = _ratio(correct[~is_oos].sum(), (~is_oos).sum())
        report["oos_recall"] = _ratio((is_oos & said_oos).sum(), is_oos.sum())
        report["oos_precision"] = _ratio((is_oos & said_oos).sum(), said_oos.sum())

    if confidences is not None:
        _same_length("classification_report confidences", y_true, confidences)
        conf = np.asarray(confidences, dtype=np.float64)
        if not np.all((conf >= 0) & (conf <= 1)):
            raise ValueError("confidences must lie in [0, 1]")
        order = np.argsort(-conf, kind="stable")
        report["selective_accuracy"] = {
            str(c): float(correct[order[: max(1, math.ceil(c * n - 1e-9))]].mean()) for c in SELECTIVE_COVERAGES
        }
        report["ece"] = expected_calibration_error(correct, conf)
    return report


def _most_over_answered(n_true: Counter, n_pred: Counter) -> dict[str, Any]:
    """The true label answered most often relative to its share of the rows: a classifier leaning
    on one label shows here first (ratio 1 for a classifier that answers in the true proportions)."""
    label = max(sorted(n_true), key=lambda key: n_pred[key] / n_true[key])
    return {"label": label, "ratio": n_pred[label] / n_true[label], "answered": n_pred[label], "support": n_true[label]}


def _scores_per_key(keys: Iterable[str], tp: Counter, n_pred: Counter, n_true: Counter) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support for each key (label or entity type) from its counts."""
    scores = {}
    for key in keys:
        precision, recall, f1 = _prf(tp[key], n_pred[key], n_true[key])
        scores[key] = {"precision": precision, "recall": recall, "f1": f1, "support": n_true[key]}
    return scores


def _macro_f1(scores: dict[str, dict[str, float]]) -> float:
    return float(np.mean([s["f1"] for s in scores.values()])) if scores else 0.0


def expected_calibration_error(
    correct: Sequence[bool] | np.ndarray, confidences: Sequence[float] | np.ndarray, bins: int = ECE_BINS
) -> float:
    """Σ over equal-width bins of |accuracy − mean confidence| × fraction of rows in the bin.

    Bin k holds confidences in (k/bins, (k+1)/bins]; a confidence of exactly 0 joins the first bin.
    """
    hit = np.asarray(correct, dtype=np.float64)
    conf = np.asarray(confidences, dtype=np.float64)
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for k in np.unique(index):
        in_bin = index == k
        ece += abs(hit[in_bin].mean() - conf[in_bin].mean()) * in_bin.mean()
    return float(ece)


def multilabel_report(true_sets: Sequence[Iterable[str]], pred_sets: Sequence[Iterable[str] | None]) -> dict[str, Any]:
    """Micro and macro precision/recall/F1 over (item, label) decisions, and exact-set accuracy.

    Macro-F1 averages over labels present in either side; a None prediction is the empty set.
    """
    _same_length("multilabel_report", true_sets, pred_sets)
    if not true_sets:
        raise ValueError("multilabel_report: no rows")
    true = [set(t) for t in true_sets]
    pred = [set(p or ()) for p in pred_sets]
    tp, n_pred, n_true = Counter(), Counter(), Counter()
    for t, p in zip(true, pred, strict=True):
        tp.update(t & p)
        n_pred.update(p)
        n_true.update(t)
    micro_p, micro_r, micro_f1 = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    per_label = _scores_per_key(sorted(set(n_true) | set(n_pred)), tp, n_pred, n_true)
    return {
        "n": len(true),
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "macro_f1": _macro_f1(per_label),
        "exact_match": float(np.mean([t == p for t, p in zip(true, pred, strict=True)])),
        "per_label": per_label,
    }


_SPACES = re.compile(r"\s+")


def _canonical(value: Any) -> Any:
    """A hashable form in which equal-after-normalisation values are equal: strings trimmed, spaces
    collapsed and case-folded; lists compared as multisets; objects field by field."""
    if isinstance(value, str):
        return _SPACES.sub(" ", value).strip().casefold()
    if isinstance(value, bool):
        return ("bool", value)  # True must not equal 1
    if isinstance(value, list | tuple):
        return ("list", tuple(sorted((_canonical(v) for v in value), key=repr)))
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    return value


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def extraction_report(
    gold: Sequence[Mapping[str, Any]],
    pred: Sequence[Mapping[str, Any] | None],
    *,
    schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How often the output was valid JSON (an object, valid against `schema` if given), and how many fields were right.

    `field_exact_match`: the fraction of all gold fields whose predicted value equals the gold one
    after normalisation (see `_canonical`); a missing field or a prediction that is not an object
    counts as wrong. Field matching does not depend on schema validity: the two are reported apart.
    `all_fields_exact`: the fraction of items whose gold fields are all exact and that predict no
    extra field with a non-empty value. `spurious_fields`: how many such extra fields there were.
    """
    _same_length("extraction_report", gold, pred)
    if not gold:
        raise ValueError("extraction_report: no rows")
    validator = None
    if schema is not None:
        from jsonschema.validators import validator_for  # imported here: keeps `workhorse --help` fast

        cls = validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)

    valid = 0
    matched, total, all_exact, spurious = 0, 0, 0, 0
    field_hits: Counter[str] = Counter()
    field_support: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        is_object = isinstance(p, Mapping)
        valid += is_object and (validator is None or validator.is_valid(p))
        p = p if isinstance(p, Mapping) else {}
        item_ok = True
        for field, value in g.items():
            hit = field in p and _canonical(p[field]) == _canonical(value)
            field_support[field] += 1
            field_hits[field] += hit
            matched += hit
            item_ok &= hit
        extra = sum(1 for field, value in p.items() if field not in g and not _empty(value))
        spurious += extra
        all_exact += item_ok and not extra
        total += len(g)
    return {
        "n": len(gold),
        "json_valid_rate": valid / len(gold),
        "field_exact_match": _ratio(matched, total),
        "all_fields_exact": all_exact / len(gold),
        "spurious_fields": spurious,
        "per_field": {
            f: {"exact": field_hits[f] / field_support[f], "support": field_support[f]} for f in sorted(field_support)
        },
    }


def _entity_pairs(item: Mapping[str, Any] | None) -> Counter[tuple[str, str]]:
    pairs: Counter[tuple[str, str]] = Counter()
    if not isinstance(item, Mapping):
        return pairs
    for entity_type, values in item.items():
        for value in [values] if isinstance(values, str) else values or ():
            pairs[(str(entity_type), str(value).strip())] += 1
    return pairs


def entity_f1(
    gold: Sequence[Mapping[str, Sequence[str]]], pred: Sequence[Mapping[str, Sequence[str] | str] | None]
) -> dict[str, Any]:
    """Micro precision/recall/F1 over (entity type, entity string) pairs, matched within each item, plus per type.

    Strings are compared exactly after trimming; a prediction that is not an object predicts nothing.
    """
    _same_length("entity_f1", gold, pred)
    tp, n_pred, n_true = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred, strict=True):
        gold_pairs, pred_pairs = _entity_pairs(g), _entity_pairs(p)
        for (entity_type, _), count in (gold_pairs & pred_pairs).items():
            tp[entity_type] += count
        for (entity_type, _), count in pred_pairs.items():
            n_pred[entity_type] += count
        for (entity_type, _), count in gold_pairs.items():
            n_true[entity_type] += count
    precision, recall, f1 = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    per_type = _scores_per_key(sorted(set(n_true) | set(n_pred)), tp, n_pred, n_true)
    return {
        "n": len(gold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "gold_entities": sum(n_true.values()),
        "predicted_entities": sum(n_pred.values()),
        "per_type": per_type,
    }


def latency_summary(seconds: Sequence[float], wall_seconds: float | None = None) -> dict[str, Any]:
    """Per-item latency percentiles and mean in milliseconds; `items_per_s` = n / `wall_seconds` (None without it).

    Percentiles interpolate linearly between ranks (numpy's default).
    """
    if len(seconds) == 0:
        raise ValueError("latency_summary: no latencies")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": int(ms.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
        "items_per_s": float(ms.size / wall_seconds) if wall_seconds else None,
    }


# ---------------------------------------------------------------- embeddings: nearest neighbours

SIMILARITY_CELLS = 16_000_000  # query × index similarities held at once (64 MB of float32): bounds memory, not speed


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, so that dot products are cosines; an all-zero row stays zero (cosine 0)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array, got shape {array.shape}")
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(queries: np.ndarray, index: np.ndarray, k: int, *, cells: int = SIMILARITY_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """The `k` index rows nearest to each query by cosine: (indices, cosines), each (len(queries), k),
    nearest first. Equal cosines rank the lower index row first, so the result does not depend on
    how the work is chunked. Queries go `cells // len(index)` at a time (at least one)."""
    q, x = _unit_rows(queries), _unit_rows(index)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dimensions, the index {x.shape[1]}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k must lie in 1..{len(x)} (the index size), got {k}")
    out_index = np.empty((len(q), k), dtype=np.int64)
    out_cosine = np.empty((len(q), k), dtype=np.float32)
    step = max(1, cells // len(x))
    for start in range(0, len(q), step):
        sims = q[start : start + step] @ x.T
        out_index[start : start + step], out_cosine[start : start + step] = _top_k(sims, k)
    return out_index, out_cosine


def _top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k per row in O(row length): everything above the k-th largest value, then as many
    of the rows equal to it as are still needed, lowest index first; finally those k in order."""
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1 : k]
    above = sims > kth
    tied = sims == kth
    still_needed = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= still_needed))
    columns = np.nonzero(chosen)[1].reshape(len(sims), k)  # row-major: each row's picks in index order
    values = np.take_along_axis(sims, columns, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")  # stable: equal cosines keep index order
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(values, order, axis=1)


def _codes(query_labels: Sequence[str], index_labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as integers shared by both sides (a query label absent from the index gets a code of its own)."""
    _, codes = np.unique(np.asarray([*query_labels, *index_labels], dtype=object).astype(str), return_inverse=True)
    return codes[: len(query_labels)], codes[len(query_labels) :]


def knn_accuracy(query_labels: Sequence[str], index_labels: Sequence[str], neighbours: np.ndarray, k: int) -> float:
    """Share of queries whose predicted label is their own: the label most common among their `k`
    nearest index rows (`neighbours`, nearest first, as `nearest_neighbours` returns them). A tie
    between labels goes to the one held by the nearest of the tied neighbours."""
    _same_length("knn_accuracy", query_labels, neighbours)
    if not len(query_labels):
        raise ValueError("knn_accuracy: no queries")
    if not 1 <= k <= neighbours.shape[1]:
        raise ValueError(f"k must lie in 1..{neighbours.shape[1]} (the neighbours given), got {k}")
    query, index = _codes(query_labels, index_labels)
    near = index[neighbours[:, :k]]  # (n, k) label codes, nearest first
    votes = (near[:, :, None] == near[:, None, :]).sum(axis=2)  # votes[i, j]: neighbours sharing neighbour j's label
    winner = near[np.arange(len(near)), votes.argmax(axis=1)]  # argmax takes the first, i.e. nearest, of the tied
    return float((winner == query).mean())


def retrieval_at_k(query_groups: Sequence[str], index_groups: Sequence[str], neighbours: np.ndarray, k: int = 10) -> dict[str, Any]:
    """How well each query's `k` nearest index rows find the rows of its own group (label, event …).

    `recall_at_k`: relevant rows among the top k ÷ min(k, relevant rows in the index), averaged over
    queries: 1.0 means the top k is as full of relevant rows as it can be, whether a query has one
    relevant row or a thousand. `hit_at_k`: share of queries with at least one relevant row in the
    top k. `mrr_at_k`: mean of 1 / rank of the first relevant row (0 when none is in the top k).
    Queries whose group has no row in the index cannot be scored: they are counted, not averaged.
    """
    _same_length("retrieval_at_k", query_groups, neighbours)
    if not 1 <= k <= neighbours.shape[1]:
        raise ValueError(f"k must lie in 1..{neighbours.shape[1]} (the neighbours given), got {k}")
    query, index = _codes(query_groups, index_groups)
    relevant_rows = np.bincount(index, minlength=int(max(query.max(initial=0), index.max(initial=0))) + 1)[query]
    scored = relevant_rows > 0
    if not scored.any():
        raise ValueError("retrieval_at_k: no query has a relevant row in the index")
    relevant = index[neighbours[:, :k]] == query[:, None]  # (n, k)
    hits = relevant.sum(axis=1)
    first = relevant.argmax(axis=1)
    reciprocal = np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)
    return {
        "k": k,
        "queries": int(scored.sum()),
        "queries_without_relevant": int((~scored).sum()),
        "mean_relevant": float(relevant_rows[scored].mean()),
        "recall_at_k": float((hits[scored] / np.minimum(k, relevant_rows[scored])).mean()),
        "hit_at_k": float((hits[scored] > 0).mean()),
        "mrr_at_k": float(reciprocal[scored].mean()),
    }


KNN_KS = (1, 5)
RETRIEVAL_K = 10
KNN_TIE_BREAK = "a tie between labels goes to the one held by the nearest of the tied neighbours"


def neighbour_report(
    queries: np.ndarray, query_labels: Sequence[str], index: np.ndarray, index_labels: Sequence[str],
    *, ks: Sequence[int] = KNN_KS, retrieval_k: int = RETRIEVAL_K,
) -> dict[str, Any]:
    """Label accuracy of k-nearest-neighbour votes for each k in `ks` (`knn_accuracy`, keyed by k as a
    string), and `retrieval_at_k` with the rows of the query's own label as the relevant ones."""
    _same_length("neighbour_report queries", queries, query_labels)
    _same_length("neighbour_report index", index, index_labels)
    neighbours, _ = nearest_neighbours(queries, index, max(*ks, retrieval_k))
    return {
        "n": len(query_labels),
        "index_rows": len(index_labels),
        "knn_accuracy": {str(k): knn_accuracy(query_labels, index_labels, neighbours, k) for k in ks},
        "knn_tie_break": KNN_TIE_BREAK,
        "retrieval": retrieval_at_k(query_labels, index_labels, neighbours, retrieval_k),
    }
