"""Ensembles of trained members from their saved test-set probabilities: no model is rerun.

hard: majority vote of top-1 predictions, ties broken by the tie-break member's choice
soft: mean of probabilities
weighted: probabilities weighted by each member's validation accuracy
oracle: correct when any member is — the upper bound no vote can beat
"""

from __future__ import annotations

import numpy as np


def hard_vote(probs: np.ndarray, tie_break: int) -> np.ndarray:
    """probs: members x N x C. The most-voted class; on a tie, the tie-break member's choice when
    it is among the tied classes, else the tied class with the highest summed probability."""
    members, n, c = probs.shape
    votes = probs.argmax(axis=2)                                     # members x N
    counts = np.zeros((n, c), dtype=np.int64)
    for member_votes in votes:
        counts[np.arange(n), member_votes] += 1
    top = counts.max(axis=1, keepdims=True)
    tied = counts == top
    preferred = votes[tie_break]
    fallback = np.where(tied, probs.sum(axis=0), -np.inf).argmax(axis=1)
    return np.where(tied[np.arange(n), preferred], preferred, fallback)


def soft_vote(probs: np.ndarray) -> np.ndarray:
    return probs.mean(axis=0)


def weighted_vote(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("ensemble weights must not all be zero")
    return np.tensordot(weights / weights.sum(), probs, axes=1)


def oracle_accuracy(probs: np.ndarray, y_true: np.ndarray) -> float:
    return float((probs.argmax(axis=2) == y_true[None, :]).any(axis=0).mean())


def compare(members: list[str], test_probs: np.ndarray, y_test: np.ndarray, val_accuracy: list[float],
            tie_break: str) -> dict:
    """Test accuracy of every member, every vote, and the oracle."""
    def acc(pred: np.ndarray) -> float:
        return float((pred == y_test).mean())

    rows = {m: acc(test_probs[i].argmax(axis=1)) for i, m in enumerate(members)}
    rows["hard_vote"] = acc(hard_vote(test_probs, members.index(tie_break)))
    rows["soft_vote"] = acc(soft_vote(test_probs).argmax(axis=1))
    rows["weighted_vote"] = acc(weighted_vote(test_probs, val_accuracy).argmax(axis=1))
    rows["oracle"] = oracle_accuracy(test_probs, y_test)
    return rows
