"""Ensembles of trained members from their saved probabilities: no model is rerun.

hard: majority vote of top-1 predictions, ties broken by the tie-break member's choice
soft: mean of probabilities
weighted: probabilities weighted by each member's validation accuracy
oracle: correct when any member is — the upper bound no vote can beat

Every choice is made on the validation split: the tie-break member (unless params name one), the
weights, and which vote predict and serve use (`chosen_vote` in reports/ensemble.json). The test
split is only reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from imgclass import files
from imgclass.evaluation.evaluate import SavedPredictions

# Ties in validation accuracy go to the earlier vote: soft first, the simplest and the one a single
# member reduces to.
VOTES = ("soft_vote", "weighted_vote", "hard_vote")


class EnsembleError(ValueError):
    """The members' saved predictions cannot be ensembled; the message says what to rerun."""


def hard_vote(probs: np.ndarray, tie_break: int) -> np.ndarray:
    """probs: members x N x C. The most-voted class; on a tie, the tie-break member's choice when
    it is among the tied classes, else the tied class with the highest summed probability."""
    members, n, c = probs.shape
    votes = probs.argmax(axis=2)                                     # members x N
    counts = vote_counts(probs)
    tied = counts == counts.max(axis=1, keepdims=True)
    preferred = votes[tie_break]
    fallback = np.where(tied, probs.sum(axis=0), -np.inf).argmax(axis=1)
    return np.where(tied[np.arange(n), preferred], preferred, fallback)


def vote_counts(probs: np.ndarray) -> np.ndarray:
    """N x C: how many members put each class first."""
    members, n, c = probs.shape
    counts = np.zeros((n, c), dtype=np.int64)
    for member_votes in probs.argmax(axis=2):
        counts[np.arange(n), member_votes] += 1
    return counts


def soft_vote(probs: np.ndarray) -> np.ndarray:
    return probs.mean(axis=0)


def weighted_vote(probs: np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("ensemble weights must not all be zero")
    return np.tensordot(weights / weights.sum(), probs, axes=1)


def oracle_accuracy(probs: np.ndarray, y_true: np.ndarray) -> float:
    return float((probs.argmax(axis=2) == y_true[None, :]).any(axis=0).mean())


def apply_vote(method: str, probs: np.ndarray, tie_break: int = 0,
               weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores N x C, predicted N) of one vote over members x N x C probabilities. Hard vote scores
    are the members' vote shares; its prediction applies the tie-break, which shares cannot show."""
    if method == "soft_vote":
        scores = soft_vote(probs)
        return scores, scores.argmax(axis=1)
    if method == "weighted_vote":
        scores = weighted_vote(probs, weights if weights is not None else np.ones(len(probs)))
        return scores, scores.argmax(axis=1)
    if method == "hard_vote":
        return vote_counts(probs) / len(probs), hard_vote(probs, tie_break)
    raise ValueError(f"unknown vote {method!r}; choose one of {', '.join(VOTES)}")


def choose_tie_break(members: list[str], val_accuracy: list[float], configured: str | None) -> str:
    """The configured member, else the member with the best validation accuracy (first on ties)."""
    return configured or members[int(np.argmax(val_accuracy))]


def choose_vote(val_table: dict[str, float]) -> str:
    """The vote with the best validation accuracy; ties go to the earlier entry of VOTES."""
    return max(VOTES, key=lambda v: (val_table[v], -VOTES.index(v)))


def accuracy_table(members: list[str], probs: np.ndarray, labels: np.ndarray, tie_break: str,
                   weights: list[float]) -> dict[str, float]:
    """Accuracy of every member, every vote and the oracle on one split."""
    def acc(pred: np.ndarray) -> float:
        return float((pred == labels).mean()) if len(labels) else 0.0

    rows = {m: acc(probs[i].argmax(axis=1)) for i, m in enumerate(members)}
    for method in VOTES:
        rows[method] = acc(apply_vote(method, probs, members.index(tie_break), weights)[1])
    rows["oracle"] = oracle_accuracy(probs, labels)
    return rows


def compare(members: list[str], test_probs: np.ndarray, y_test: np.ndarray, val_accuracy: list[float],
            tie_break: str) -> dict:
    """Test accuracy of every member, every vote (weighted by validation accuracy), and the oracle."""
    return accuracy_table(members, test_probs, y_test, tie_break, val_accuracy)


@dataclass(frozen=True)
class EnsembleSpec:
    """What predict and serve need to vote as the ensemble stage evaluated: the members in order,
    the chosen vote, the tie-break member, the weights and each member checkpoint's sha256."""
    members: list[str]
    vote: str
    tie_break: str
    weights: list[float]
    checkpoints: dict[str, str] = field(default_factory=dict)

    def apply(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, predicted) for members x N x C probabilities in `members` order."""
        return apply_vote(self.vote, probs, self.members.index(self.tie_break), self.weights)

    def to_dict(self) -> dict:
        return {"members": self.members, "vote": self.vote, "tie_break": self.tie_break, "weights": self.weights,
                "checkpoints": self.checkpoints}

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleSpec":
        return cls(list(d["members"]), d["vote"], d["tie_break"], [float(w) for w in d["weights"]],
                   dict(d.get("checkpoints", {})))

    @classmethod
    def single(cls, name: str) -> "EnsembleSpec":
        return cls([name], "soft_vote", name, [1.0])


@dataclass(frozen=True)
class EnsembleResult:
    spec: EnsembleSpec
    val_accuracy: dict[str, float]
    test_accuracy: dict[str, float]

    def metrics(self) -> dict:
        """metrics/ensemble.json: what experiments are compared on, the test accuracy of every vote and
        of the oracle, and which vote validation chose (the members' own numbers are metrics/eval/M.json)."""
        shown = {k: v for k, v in self.test_accuracy.items() if k in VOTES or k == "oracle"}
        return {**shown, "chosen_vote": self.spec.vote}

    def record(self) -> dict:
        """reports/ensemble.json, the spec predict and serve read: the chosen vote's test accuracy, how
        it was chosen (tie-break, weights, member checkpoints), and every accuracy on both splits."""
        s = self.spec
        return {"accuracy": self.test_accuracy[s.vote], "chosen_vote": s.vote, "tie_break": s.tie_break,
                "members": {m: self.val_accuracy[m] for m in s.members},
                "weights": dict(zip(s.members, s.weights)), "checkpoints": s.checkpoints,
                "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy}

    def comparison_rows(self) -> list[dict]:
        return [{"method": k, "val_accuracy": self.val_accuracy[k], "test_accuracy": v}
                for k, v in self.test_accuracy.items()]


def load_member_predictions(members: list[str], preds_dir: Path | str) -> list[SavedPredictions]:
    """Every member's saved predictions, checked to share classes and val/test labels."""
    saved = [SavedPredictions.load(Path(preds_dir) / f"{m}.npz") for m in members]
    first = saved[0]
    for name, other in zip(members[1:], saved[1:]):
        if other.classes != first.classes:
            raise EnsembleError(f"{name}: classes {other.classes} differ from {members[0]}'s {first.classes}; "
                                "rerun `dvc repro`")
        if not (np.array_equal(other.test_labels, first.test_labels)
                and np.array_equal(other.val_labels, first.val_labels)):
            raise EnsembleError(f"{name} and {members[0]} were evaluated on different splits; rerun `dvc repro`")
    return saved


def evaluate_ensemble(members: list[str], saved: list[SavedPredictions],
                      tie_break: str | None = None) -> EnsembleResult:
    """Choose tie-break, weights and vote on the validation split; report both splits."""
    weights = [s.val_accuracy for s in saved]
    chosen_tie_break = choose_tie_break(members, weights, tie_break)
    val_probs, test_probs = np.stack([s.val_probs for s in saved]), np.stack([s.test_probs for s in saved])
    val_table = accuracy_table(members, val_probs, saved[0].val_labels, chosen_tie_break, weights)
    test_table = accuracy_table(members, test_probs, saved[0].test_labels, chosen_tie_break, weights)
    spec = EnsembleSpec(members, choose_vote(val_table), chosen_tie_break, weights,
                        {m: s.checkpoint_sha256 for m, s in zip(members, saved)})
    return EnsembleResult(spec, val_table, test_table)


def read_spec(path: Path | str) -> EnsembleSpec:
    """The spec recorded in reports/ensemble.json by the ensemble stage."""
    path = Path(path)
    if not path.exists():
        raise EnsembleError(f"{path}: not found; run `dvc repro` so the ensemble stage chooses the vote, "
                            "or pass --model NAME")
    saved = files.read_json(path)
    if "chosen_vote" not in saved or "checkpoints" not in saved:
        raise EnsembleError(f"{path}: written by an older ensemble stage (no chosen_vote); run `dvc repro`")
    return EnsembleSpec(list(saved["members"]), saved["chosen_vote"], saved["tie_break"],
                        [float(saved["weights"][m]) for m in saved["members"]], dict(saved["checkpoints"]))
