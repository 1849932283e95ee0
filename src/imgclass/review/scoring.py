"""Review a labelled image set for noise before it is split: `find_issues`.

1. Embeddings (embeddings.py): a pretrained backbone's pooled features, L2-normalised, cached by sha256.
2. Out-of-sample class probabilities: PCA (unsupervised, on all images), then k-fold cross-validation of
   logistic regression and/or a cosine kNN vote, averaged. No image is scored by a model that saw its label,
   nor its near-duplicates' (validate's groups are held out whole: a twin with the same wrong label would
   vouch for it).
3. Issues, each with a score in [0, 1] where higher means more suspicious:
   - label: cleanlab's confident learning (`find_label_issues`) flags it and 1 - p(given class) is at least
     `label_threshold`; the suggested class is the most probable other class.
   - outlier: the average cosine distance to the k nearest neighbours (cleanlab's out-of-distribution score)
     lies far above the data's own spread: r / (1 + r) >= `outlier_threshold`, with r the number of
     interquartile ranges above the upper quartile (see `outlier_scores`).
   - near_duplicate: another image within `near_duplicate_distance` (cosine) in embedding space, in any
     class; complements validate's perceptual hash (which sees pixels, not content).
   - low_quality: dark, blurry or low-information (image_quality.py, cleanvision's measurements).
   - class_imbalance: in the summary only (a class, not an image, has it).
4. One suspicion ranking over label and outlier: 1 - p(given class) x typicality (cleanlab's OOD score over
   its median, at most 1), i.e. one minus the chance that an image is both on-topic and correctly labelled;
   a typical image's suspicion is 1 - p(given class).
5. What a person sees (issues.csv, the review page): the flagged rows, most suspicious image first, then
   the next most suspicious images below the thresholds (`flagged` false), twice as many as were flagged
   and at least BELOW_THRESHOLD_MINIMUM: one order, the suspicion ranking.
6. auto_drop: `none` | `outliers` | `label` | `all` (label + outliers + low quality), each with a stricter
   `drop_*` score, on flagged rows only; every dropped image is listed with its reason.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from imgclass.config.params import ReviewParams
from imgclass.review.embeddings import BackboneSpec, embed_images

ISSUE_COLUMNS = ["path", "class", "sha256", "issue", "score", "suggested_class", "flagged", "suspicion"]
AUTO_DROP_COLUMNS = ["sha256", "path", "class", "issue", "score", "reason"]
ISSUE_KINDS = ("label", "outlier", "near_duplicate", "low_quality")
AUTO_DROP_ISSUES = {"none": (), "outliers": ("outlier",), "label": ("label",),
                    "all": ("label", "outlier", "low_quality")}
# Below-threshold images listed after the flagged ones: twice as many as were flagged. At the default
# thresholds the flags catch about half of the errors at a precision of about 0.8 (benchmarks/review.py),
# so the errors number about 1.5x the flagged images, and the list reaches about twice that, where the
# ranking holds nearly all of them (recall@2x 0.96-1.00). At least BELOW_THRESHOLD_MINIMUM when little or
# nothing is flagged: a screenful of cards, enough to see at a glance that the thresholds hide nothing.
BELOW_THRESHOLD_PER_FLAGGED = 2
BELOW_THRESHOLD_MINIMUM = 20


@dataclass
class ReviewResult:
    issues: list[dict]        # the flagged rows: ISSUE_COLUMNS minus path, plus `index` into the inputs; in
                              # ranking order (an image's rows in ISSUE_KINDS order)
    ranking: list[int]        # every input index, most suspicious first (label + outlier)
    auto_drop: list[dict]     # index, issue, score, reason; one row per dropped image
    summary: dict             # counts for metrics and the review page
    pred_probs: np.ndarray    # N x C out-of-sample probabilities, columns in `classes` order
    suspicion: np.ndarray = field(default_factory=lambda: np.zeros(0))  # N: the score `ranking` sorts by
    details: dict = field(default_factory=dict)       # (index, issue) -> why, in words, for the review page
    duplicate_of: dict = field(default_factory=dict)  # index -> index of its closest near-duplicate
    below_threshold: list = field(default_factory=list)  # rows as `issues` (flagged False): the next in ranking

    @property
    def listed(self) -> list[dict]:
        """What a person sees, in the order they see it: issues.csv's rows and the review page's cards."""
        return self.issues + self.below_threshold


def find_issues(images: list[Path], labels: list[str], sha256s: list[str], classes: list[str],
                cfg: ReviewParams, cache_dir: Path | None, device: str = "cpu", seed: int = 0,
                groups: Optional[Sequence[str]] = None) -> ReviewResult:
    """Review `images` (labelled `labels`, one of `classes`); see the module docstring. `seed` draws
    the folds and PCA's random projection: the same images and seed give the same review. `groups`
    names each image's near-duplicate group (validate's `group`); None: every image is its own."""
    y = _label_indices(images, labels, sha256s, classes)
    if groups is not None and len(groups) != len(y):
        raise ValueError(f"{len(groups)} groups for {len(y)} images")
    seconds = {}
    start = time.perf_counter()
    spec = BackboneSpec(cfg.model, cfg.image_size, cfg.hflip)
    emb = embed_images(images, sha256s, spec, cache_dir, device, cfg.batch_size)
    seconds["embed"] = time.perf_counter() - start

    start = time.perf_counter()
    # One BLAS thread: on 2 shared cores, OpenBLAS and OpenMP threads spinning against each other made
    # 5-fold logistic regression on 10,000 images take 43 s instead of 3 s.
    with threadpool_limits(1):
        reduced = reduce_dimensions(emb.features, cfg.pca, seed)
        pred_probs = out_of_sample_probabilities(reduced, y, len(classes), cfg, seed, groups)
    seconds["cv"] = time.perf_counter() - start

    start = time.perf_counter()
    label = label_scores(y, pred_probs)
    neighbours = neighbourhoods(emb.features, cfg.knn)  # large matrix products: every core
    in_distribution, outlier = outlier_scores(neighbours.mean_distance)
    suspicion = 1.0 - label["p_given"] * typicality(in_distribution)
    details: dict[tuple[int, str], str] = {}
    duplicate_of: dict[int, int] = {}
    rows = (_label_rows(y, pred_probs, label, classes, cfg, details)
            + _outlier_rows(y, outlier, classes, cfg, details)
            + _near_duplicate_rows(y, neighbours, cfg.near_duplicate_distance, classes, details, duplicate_of)
            + _low_quality_rows(images, sha256s, cache_dir, y, classes, cfg, details))
    ranking = [int(i) for i in np.lexsort((np.arange(len(y)), -suspicion))]  # ties: input order
    rows = _in_ranking_order(rows, ranking)
    below = _below_threshold_rows(y, pred_probs, label, outlier, ranking, {row["index"] for row in rows},
                                  classes, cfg, details)
    for row in rows + below:
        row |= {"sha256": sha256s[row["index"]], "suspicion": round(float(suspicion[row["index"]]), 4)}
    drops = choose_auto_drop(rows, cfg, details)
    seconds["issues"] = time.perf_counter() - start

    summary = summarise(y, rows, drops, classes, pred_probs, cfg)
    summary["embedded"] = emb.embedded
    summary["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return ReviewResult(issues=rows, ranking=ranking, auto_drop=drops, summary=summary, pred_probs=pred_probs,
                        suspicion=suspicion, details=details, duplicate_of=duplicate_of, below_threshold=below)


def _label_indices(images: Sequence[Path], labels: Sequence[str], sha256s: Sequence[str],
                   classes: Sequence[str]) -> np.ndarray:
    if not (len(images) == len(labels) == len(sha256s)):
        raise ValueError(f"{len(images)} images, {len(labels)} labels and {len(sha256s)} sha256s differ")
    if len(classes) < 2:
        raise ValueError("needs at least 2 classes")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"label {unknown[0]!r} is not one of the classes {', '.join(classes)}")
    counts = Counter(labels)
    if len(counts) < 2:
        raise ValueError("the images span fewer than 2 classes; nothing to cross-validate")
    return np.array([index[name] for name in labels], dtype=int)


# --- probabilities --------------------------------------------------------------------------------

def reduce_dimensions(features: np.ndarray, components: Optional[int], seed: int = 0) -> np.ndarray:
    """PCA to `components` (never more than the data supports), rows L2-normalised again for cosine kNN."""
    from sklearn.decomposition import PCA

    reduced = features
    keep = min(components or features.shape[1], features.shape[0] - 1, features.shape[1])
    if components and keep < features.shape[1]:  # randomized SVD in float32: seconds on 10,000 x 1280
        reduced = PCA(n_components=keep, svd_solver="randomized", random_state=seed).fit_transform(
            features.astype(np.float32))
    return reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)


def out_of_sample_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: ReviewParams,
                                seed: int = 0, groups: Optional[Sequence[str]] = None) -> np.ndarray:
    """N x n_classes probabilities, each row from models fitted on the other folds only; an image's
    near-duplicate group (`groups`, see `cross_validation_folds`) is held out with it."""
    folds = cross_validation_folds(y, groups, cfg.folds, seed)
    probs = np.zeros((len(y), n_classes))
    for fold in range(int(folds.max()) + 1):
        held_out, train = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
        parts = []
        if "logistic" in cfg.classifier:
            parts.append(_logistic_probabilities(x[train], y[train], x[held_out], n_classes))
        if "knn" in cfg.classifier:
            parts.append(_knn_probabilities(x[train], y[train], x[held_out], n_classes, cfg.knn))
        probs[held_out] = np.mean(parts, axis=0)
    return probs


def cross_validation_folds(y: np.ndarray, groups: Optional[Sequence[str]], folds: int, seed: int) -> np.ndarray:
    """Each image's fold, 0..k-1 (k = `folds`, fewer when even the largest class has fewer groups). A
    near-duplicate group (one name per image; None: every image alone) is held out whole, so no image is
    vouched for by its twin; the folds are stratified by each group's most common class. (sklearn's
    StratifiedGroupKFold does much the same with a Python loop per group: 8 s for 10,000 images, this 0.1 s.)"""
    from sklearn.model_selection import StratifiedKFold

    units = _cross_validation_units(y, groups)
    unit_class = _most_common_class(units, y)
    k = max(2, min(folds, int(np.bincount(unit_class).max())))
    fold_of_unit = np.zeros(len(unit_class), dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        for fold, (_, held_out) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed)
                                             .split(unit_class, unit_class)):
            fold_of_unit[held_out] = fold
    return fold_of_unit[units]


def _cross_validation_units(y: np.ndarray, groups: Optional[Sequence[str]]) -> np.ndarray:
    """Per image, the index of what the folds are drawn over: its group, or the image alone. A class
    with fewer groups than folds has its groups in some folds only, each held out once, which is fine;
    but a class that is one group would, held out whole, be missing from the training folds, and every
    image in it would look mislabelled: such a class is split image by image, as without groups."""
    if groups is None:
        return np.arange(len(y))
    codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1].reshape(-1)
    one_group = [c for c in np.unique(y) if len(np.unique(codes[y == c])) < 2]
    alone = np.isin(y, one_group)
    codes = np.where(alone, codes.max() + 1 + np.arange(len(y)), codes)
    return np.unique(codes, return_inverse=True)[1].reshape(-1)


def _most_common_class(units: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per unit, the class most of its images have (a group can span classes; ties: the first class)."""
    counts = np.zeros((int(units.max()) + 1, int(y.max()) + 1), dtype=int)
    np.add.at(counts, (units, y), 1)
    return counts.argmax(axis=1)


def _logistic_probabilities(x_train, y_train, x_test, n_classes: int) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    out = np.zeros((len(x_test), n_classes))
    if len(np.unique(y_train)) < 2:  # one class in the training folds: it is all the model knows
        out[:, y_train[0]] = 1.0
        return out
    # On the unit vectors, C=10 (measured: 0.94 accuracy on 200 tuxpaint photos where standardised
    # components give 0.77 — they amplify PCA's noise dimensions); tol=1e-3 and 100 iterations keep
    # 10,000 Fashion-MNIST images at a few seconds a fold for the same held-out log-loss.
    model = LogisticRegression(C=10.0, tol=1e-3, max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    out[:, model.classes_] = model.predict_proba(x_test)
    return out


def _knn_probabilities(x_train, y_train, x_test, n_classes: int, k: int) -> np.ndarray:
    """Similarity-weighted vote of the k nearest training images (cosine), smoothed so no class gets 0."""
    k = min(k, len(x_train))
    out = np.zeros((len(x_test), n_classes))
    block = _rows_per_block(len(x_train))
    for start in range(0, len(x_test), block):
        sims = x_test[start:start + block] @ x_train.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.clip(np.take_along_axis(sims, nearest, axis=1), 0, None) + 1e-6
        votes = np.zeros((len(sims), n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(sims)), k), y_train[nearest].ravel()), weights.ravel())
        out[start:start + len(sims)] = votes
    out += 0.01  # a class no neighbour has is unlikely, not impossible
    return out / out.sum(axis=1, keepdims=True)


_BLOCK_CELLS = 4_000_000  # similarities computed at once: 16 MB, and 32 MB of argpartition's indices


def _rows_per_block(n: int) -> int:
    """Rows of an (rows x n) similarity block: memory stays flat in n, matrix products stay large."""
    return max(64, _BLOCK_CELLS // max(n, 1))


# --- scores ---------------------------------------------------------------------------------------

def label_scores(y: np.ndarray, pred_probs: np.ndarray) -> dict:
    """cleanlab's confident-learning flags, over the classes that have images (cleanlab needs each)."""
    from cleanlab.filter import find_label_issues

    present = np.unique(y)
    remap = np.full(pred_probs.shape[1], -1)
    remap[present] = np.arange(len(present))
    sub = pred_probs[:, present]
    sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
    flagged = find_label_issues(labels=remap[y], pred_probs=sub, filter_by="prune_by_noise_rate",
                                n_jobs=1) if len(present) > 1 else np.zeros(len(y), bool)
    p_given = pred_probs[np.arange(len(y)), y]
    return {"flagged": np.asarray(flagged, bool), "p_given": p_given}


@dataclass
class Neighbourhoods:
    mean_distance: np.ndarray     # N: average cosine distance to the k nearest other images
    nearest: np.ndarray           # N: index of the nearest other image
    nearest_distance: np.ndarray  # N: its cosine distance


def neighbourhoods(features: np.ndarray, k: int) -> Neighbourhoods:
    """The k nearest other images of each image by cosine distance (unit rows), a block of rows at a
    time: about _BLOCK_CELLS similarities (and their indices) at once, O(N) after, whatever N is."""
    n = len(features)
    k = max(1, min(k, n - 1))
    block = _rows_per_block(n)
    mean_distance, nearest_distance = np.zeros(n), np.full(n, 2.0)
    nearest = np.full(n, -1)
    if n < 2:
        return Neighbourhoods(mean_distance, nearest, nearest_distance)
    for start in range(0, n, block):
        sims = features[start:start + block] @ features.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # an image is not its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        distance = np.clip(1.0 - top_sims, 0.0, 2.0)
        mean_distance[start:start + len(sims)] = distance.mean(axis=1)
        best = top_sims.argmax(axis=1)
        nearest[start:start + len(sims)] = top[rows, best]
        nearest_distance[start:start + len(sims)] = distance[rows, best]
    return Neighbourhoods(mean_distance, nearest, nearest_distance)


def outlier_scores(mean_distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cleanlab's out-of-distribution score, outlier score) per image from the average distance d to
    the k nearest neighbours (the full embeddings separate off-topic images better than PCA's).
    cleanlab's score is exp(-d / median(d)), as its OutOfDistribution computes it: 0.37 for a typical
    image, towards 0 far away. Its spread differs between data sets (28-px clothes vs photos), so the
    outlier score is relative: r / (1 + r) with r = how many interquartile ranges d lies above the
    upper quartile; cleanlab's Datalab flags r > 1.7 (score 0.63); r = 4 is 0.8."""
    from cleanlab.internal.outlier import transform_distances_to_scores

    if len(mean_distance) < 4:
        return np.ones(len(mean_distance)), np.zeros(len(mean_distance))
    scale = max(float(np.median(mean_distance)), 100 * np.finfo(np.float64).eps)
    ood = transform_distances_to_scores(mean_distance, t=1, scaling_factor=scale)
    q1, q3 = np.percentile(mean_distance, [25, 75])
    beyond = np.clip((mean_distance - q3) / max(q3 - q1, 1e-12), 0.0, None)
    return np.asarray(ood, float), beyond / (1.0 + beyond)


def typicality(in_distribution: np.ndarray) -> np.ndarray:
    """cleanlab's OOD score relative to the median image's, capped at 1: 1 for the nearer half,
    exp(-(d - median) / median) beyond it."""
    if len(in_distribution) == 0:
        return in_distribution
    return np.minimum(1.0, in_distribution / max(float(np.median(in_distribution)), 1e-300))


def _row(index: int, y: np.ndarray, classes: Sequence[str], issue: str, score: float, suggested: str = "",
         flagged: bool = True) -> dict:
    """One issue row; find_issues fills in sha256 and the image's suspicion."""
    return {"index": int(index), "class": classes[y[index]], "sha256": "", "issue": issue,
            "score": round(float(score), 4), "suggested_class": suggested, "flagged": flagged, "suspicion": 0.0}


def _suggested_classes(y: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per image, the most probable class other than its given one."""
    others = pred_probs.copy()
    others[np.arange(len(y)), y] = -1.0  # the suggestion is never the given class
    return others.argmax(axis=1)


def _label_detail(i: int, y, pred_probs, label: dict, suggested: np.ndarray, classes) -> str:
    return (f"p({classes[y[i]]}) = {label['p_given'][i]:.2f} out of sample; looks like "
            f"{classes[suggested[i]]} (p = {pred_probs[i, suggested[i]]:.2f})")


def _outlier_detail(score: float, knn: int) -> str:
    beyond = score / max(1.0 - score, 1e-12)  # score = r / (1 + r)
    return f"its distance to the {knn} nearest images is {beyond:.1f} interquartile ranges above the upper quartile"


def _label_rows(y, pred_probs, label: dict, classes, cfg: ReviewParams, details: dict) -> list[dict]:
    score = 1.0 - label["p_given"]
    suggested = _suggested_classes(y, pred_probs)
    hits = np.flatnonzero(label["flagged"] & (score >= cfg.label_threshold))
    for i in hits:
        details[(int(i), "label")] = _label_detail(i, y, pred_probs, label, suggested, classes)
    return [_row(i, y, classes, "label", score[i], classes[suggested[i]]) for i in hits]


def _outlier_rows(y, outlier: np.ndarray, classes, cfg: ReviewParams, details: dict) -> list[dict]:
    hits = np.flatnonzero(outlier >= cfg.outlier_threshold)
    for i in hits:
        details[(int(i), "outlier")] = "far from every class: " + _outlier_detail(outlier[i], cfg.knn)
    return [_row(i, y, classes, "outlier", outlier[i]) for i in hits]


def _near_duplicate_rows(y, neighbours: Neighbourhoods, max_distance: Optional[float], classes, details: dict,
                         duplicate_of: dict[int, int]) -> list[dict]:
    """One row per image whose nearest other image lies within `max_distance` (cosine; None = off);
    score = 1 - that distance (1 = identical)."""
    if max_distance is None:
        return []
    close = np.flatnonzero((neighbours.nearest >= 0) & (neighbours.nearest_distance <= max_distance))
    for index in close.tolist():
        other = int(neighbours.nearest[index])
        duplicate_of[index] = other
        where = "another class" if y[other] != y[index] else "the same class"
        details[(index, "near_duplicate")] = (f"cosine distance {neighbours.nearest_distance[index]:.4f} to an image "
                                              f"in {where} ({classes[y[other]]})")
    return [_row(i, y, classes, "near_duplicate", 1.0 - neighbours.nearest_distance[i]) for i in close.tolist()]


def _low_quality_rows(images, sha256s, cache_dir, y, classes, cfg: ReviewParams, details: dict) -> list[dict]:
    """Rows for dark/blurry/low-information images (cleanvision's measurements)."""
    from imgclass.review import image_quality

    severity = image_quality.severities([Path(p) for p in images], sha256s, cache_dir)
    worst, kinds = image_quality.worst_kind(severity)
    hits = np.flatnonzero(worst >= cfg.low_quality_threshold)
    for i in hits:
        details[(int(i), "low_quality")] = kinds[i].replace("_", " ")
    return [_row(i, y, classes, "low_quality", worst[i]) for i in hits]


# --- what a person sees ---------------------------------------------------------------------------

def _in_ranking_order(rows: list[dict], ranking: list[int]) -> list[dict]:
    """Most suspicious image first, an image's rows in ISSUE_KINDS order: issues.csv's and the page's order."""
    place = {index: rank for rank, index in enumerate(ranking)}
    return sorted(rows, key=lambda row: (place[row["index"]], ISSUE_KINDS.index(row["issue"])))


def _below_threshold_rows(y, pred_probs, label: dict, outlier: np.ndarray, ranking: list[int], flagged: set[int],
                          classes, cfg: ReviewParams, details: dict) -> list[dict]:
    """One row (flagged False) for each of the next most suspicious images in `ranking` that no issue
    flagged: BELOW_THRESHOLD_PER_FLAGGED per flagged image, at least BELOW_THRESHOLD_MINIMUM. Its issue is
    whichever of label (1 - p(given class)) and outlier scores higher: the part of the suspicion to look at."""
    count = max(BELOW_THRESHOLD_PER_FLAGGED * len(flagged), BELOW_THRESHOLD_MINIMUM)
    chosen = [i for i in ranking if i not in flagged][:count]
    label_score = 1.0 - label["p_given"]
    suggested = _suggested_classes(y, pred_probs)
    rows = []
    for i in chosen:
        if outlier[i] > label_score[i]:
            details[(i, "outlier")] = "below threshold: " + _outlier_detail(outlier[i], cfg.knn)
            rows.append(_row(i, y, classes, "outlier", outlier[i], flagged=False))
        else:
            details[(i, "label")] = "below threshold: " + _label_detail(i, y, pred_probs, label, suggested, classes)
            rows.append(_row(i, y, classes, "label", label_score[i], classes[suggested[i]], flagged=False))
    return rows


# --- auto_drop and summary ------------------------------------------------------------------------

def choose_auto_drop(rows: list[dict], cfg: ReviewParams, details: Optional[dict] = None) -> list[dict]:
    """The flagged rows `cfg.auto_drop` removes (score at least the issue's drop_* threshold), one per
    image; below-threshold rows never. `details` (ReviewResult.details) words the reasons."""
    minimum = {"label": cfg.drop_label_score, "outlier": cfg.drop_outlier_score,
               "low_quality": cfg.drop_low_quality_score}
    chosen: dict[int, dict] = {}
    for issue in AUTO_DROP_ISSUES[cfg.auto_drop]:
        for row in rows:
            if (row["flagged"] and row["issue"] == issue and row["score"] >= minimum[issue]
                    and row["index"] not in chosen):
                chosen[row["index"]] = {"index": row["index"], "issue": issue, "score": row["score"],
                                        "reason": _reason(row, minimum[issue], details or {})}
    return sorted(chosen.values(), key=lambda r: (-r["score"], r["index"]))


def _reason(row: dict, minimum: float, details: dict) -> str:
    """'<issue> score S >= T: <why>' — the line auto_drop.csv and the review page show."""
    why = details.get((row["index"], row["issue"]), "")
    if row["issue"] == "label" and not why:
        why = f"looks like {row['suggested_class']}"
    return f"{row['issue']} score {row['score']:.3f} >= {minimum}" + (f": {why}" if why else "")


def summarise(y, rows, drops, classes, pred_probs, cfg: ReviewParams) -> dict:
    counts = np.bincount(y, minlength=len(classes))
    largest = int(counts.max())
    flagged = [c for c, n in zip(classes, counts) if n < cfg.imbalance_ratio * largest]
    by_class = {c: {k: 0 for k in ISSUE_KINDS} for c in classes}
    for row in rows:
        by_class[row["class"]][row["issue"]] += 1
    return {
        "images": int(len(y)),
        "issues": {k: sum(1 for r in rows if r["issue"] == k) for k in ISSUE_KINDS},
        "by_class": by_class,
        "auto_drop_mode": cfg.auto_drop,
        "auto_drop": {k: sum(1 for r in drops if r["issue"] == k) for k in ISSUE_KINDS if k != "near_duplicate"},
        "cv_accuracy": round(float((pred_probs.argmax(axis=1) == y).mean()), 4),
        "class_imbalance": {"counts": dict(zip(classes, counts.tolist())),
                            "ratio": round(float(counts.min() / largest), 4), "flagged": flagged},
    }
