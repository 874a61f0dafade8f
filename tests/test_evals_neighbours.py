"""Nearest-neighbour metrics of embeddings against small cases computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workhorse.evals import knn_accuracy, nearest_neighbours, neighbour_report, retrieval_at_k

# Cosines to the query (1, 0): rows 0 and 3 point the same way (1.0, a tie), row 2 at 45° (0.7071),
# row 1 at 90° (0.0), row 4 the opposite way (-1.0). To the query (0, 1): row 1 1.0, row 2 0.7071,
# rows 0, 3 and 4 all 0.0 (a three-way tie).
INDEX = np.array([[1, 0], [0, 1], [1, 1], [2, 0], [-1, 0]], dtype=np.float32)


def test_nearest_neighbours_rank_by_cosine_and_break_ties_by_row() -> None:
    indices, cosines = nearest_neighbours(np.array([[1, 0], [0, 3]], dtype=np.float32), INDEX, 5)
    assert indices.tolist() == [[0, 3, 2, 1, 4], [1, 2, 0, 3, 4]]
    assert cosines == pytest.approx(np.array([[1, 1, 2**-0.5, 0, -1], [1, 2**-0.5, 0, 0, 0]]), abs=1e-6)
    # The tie straddles the cut: the lower rows are kept.
    assert nearest_neighbours(np.array([[1, 0]]), INDEX, 1)[0].tolist() == [[0]]
    assert nearest_neighbours(np.array([[0, 1]]), INDEX, 3)[0].tolist() == [[1, 2, 0]]
    assert nearest_neighbours(np.array([[0, 1]]), INDEX, 4)[0].tolist() == [[1, 2, 0, 3]]
    # A zero vector is at cosine 0 from everything: all tied, so in row order.
    assert nearest_neighbours(np.zeros((1, 2)), INDEX, 5)[0].tolist() == [[0, 1, 2, 3, 4]]


def test_nearest_neighbours_do_not_depend_on_the_chunking() -> None:
    rng = np.random.default_rng(0)
    queries, index = rng.normal(size=(50, 8)), rng.normal(size=(37, 8))
    unit = index / np.linalg.norm(index, axis=1, keepdims=True)
    expected = np.argsort(-(queries @ unit.T), axis=1, kind="stable")[:, :7]  # no ties in random data
    for cells in (1, 37 * 3, 10**9):  # one query at a time, three, all at once
        assert nearest_neighbours(queries, index, 7, cells=cells)[0].tolist() == expected.tolist()


def test_nearest_neighbours_refuse_impossible_requests() -> None:
    with pytest.raises(ValueError, match="k must lie in 1..5"):
        nearest_neighbours(INDEX, INDEX, 6)
    with pytest.raises(ValueError, match="dimensions"):
        nearest_neighbours(np.ones((1, 3)), INDEX, 1)


INDEX_LABELS = ["a", "a", "b", "b", "c", "b"]
#                        true   neighbours       k=1       k=5 votes            k=5 answer
NEIGHBOURS = np.array([[0, 2, 3, 1, 4],  # b   a  wrong    a 2, b 2, c 1: tie   a (row 0 is nearer): wrong
                       [2, 0, 1, 3, 4],  # b   b  right    a 2, b 2, c 1: tie   b (row 2 is nearer): right
                       [4, 0, 1, 2, 3],  # a   c  wrong    a 2, b 2, c 1: tie   a (row 0 is nearer): right
                       [4, 2, 3, 0, 1],  # c   c  right    b 2, a 2, c 1: tie   b (row 2 is nearer): wrong
                       [0, 2, 3, 5, 1]])  # b  a  wrong    b 3, a 2             b (the majority, not the nearest): right
QUERY_LABELS = ["b", "b", "a", "c", "b"]


def test_knn_accuracy_votes_and_breaks_ties_by_the_nearest() -> None:
    assert knn_accuracy(QUERY_LABELS, INDEX_LABELS, NEIGHBOURS, 1) == pytest.approx(2 / 5)
    assert knn_accuracy(QUERY_LABELS, INDEX_LABELS, NEIGHBOURS, 5) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="k must lie"):
        knn_accuracy(QUERY_LABELS, INDEX_LABELS, NEIGHBOURS, 6)


def test_retrieval_at_k_caps_recall_by_the_relevant_rows() -> None:
    groups = ["x", "x", "x", "y", "z"]
    neighbours = np.array([[3, 0, 1],   # x: 3 relevant rows, 1 in the top 2 → recall 1/2, first at rank 2
                           [4, 0, 1],   # z: 1 relevant row, found first → recall 1/1
                           [0, 1, 3],   # y: its row is third, outside the top 2 → 0
                           [0, 1, 2]])  # w: no relevant row in the index → counted, not scored
    report = retrieval_at_k(["x", "z", "y", "w"], groups, neighbours, k=2)
    assert report == pytest.approx({"k": 2, "queries": 3, "queries_without_relevant": 1, "mean_relevant": 5 / 3,
                                    "recall_at_k": (1 / 2 + 1 + 0) / 3, "hit_at_k": 2 / 3, "mrr_at_k": (1 / 2 + 1 + 0) / 3})
    assert retrieval_at_k(["x", "z", "y", "w"], groups, neighbours, k=3)["recall_at_k"] == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_neighbour_report_on_vectors() -> None:
    # Ten index rows on two rays (labels "left" and "right") and one row between them.
    index = np.array([[1, 0.01 * i] for i in range(5)] + [[0.01 * i, 1] for i in range(5)] + [[1, 1]], dtype=np.float32)
    labels = ["right"] * 5 + ["up"] * 5 + ["between"]
    report = neighbour_report(np.array([[1, 0.001], [0.001, 1], [1, 0.9]]), ["right", "up", "up"], index, labels)
    # Query 3 lies nearest the "between" row, then the "right" rows: wrong at k=1 and k=5.
    assert report["knn_accuracy"] == pytest.approx({"1": 2 / 3, "5": 2 / 3})
    assert report["n"] == 3 and report["index_rows"] == 11
    # Top 10 of query 1: 5 "right", "between", then 4 "up"; relevant 5 → 5/5. Query 2 likewise → 1.
    # Query 3: "between", 5 "right", 4 "up" → 4 of min(10, 5).
    assert report["retrieval"]["recall_at_k"] == pytest.approx((1 + 1 + 4 / 5) / 3)
    json.dumps(report)
