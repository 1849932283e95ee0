"""Everything a review writes, shared by the review stage and `imgclass review`: issues.csv,
auto_drop.csv, the small metrics dict, the review page's cards and the summary figure."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from imgclass import files
from imgclass.review.scoring import AUTO_DROP_COLUMNS, ISSUE_COLUMNS, ISSUE_KINDS, ReviewResult


def issue_rows(result: ReviewResult, paths: Sequence[str]) -> list[dict]:
    """issues.csv rows, as the review page lists them: the flagged rows, then the below-threshold ones
    (`flagged` false), most suspicious image first. `paths` are the inputs' display paths (relative to
    the reviewed folder)."""
    return [{**{k: r[k] for k in ISSUE_COLUMNS if k != "path"}, "path": paths[r["index"]],
             "flagged": "true" if r["flagged"] else "false"} for r in result.listed]


def auto_drop_rows(result: ReviewResult, paths: Sequence[str], labels: Sequence[str],
                   sha256s: Sequence[str]) -> list[dict]:
    return [{"sha256": sha256s[d["index"]], "path": paths[d["index"]], "class": labels[d["index"]],
             "issue": d["issue"], "score": d["score"], "reason": d["reason"]} for d in result.auto_drop]


def write_tables(out_dir: Path, result: ReviewResult, paths: Sequence[str], labels: Sequence[str],
                 sha256s: Sequence[str]) -> None:
    files.write_csv(out_dir / "issues.csv", issue_rows(result, paths), ISSUE_COLUMNS)
    files.write_csv(out_dir / "auto_drop.csv", auto_drop_rows(result, paths, labels, sha256s), AUTO_DROP_COLUMNS)


def metrics(result: ReviewResult) -> dict:
    """The one number runs are compared on (`dvc exp show` keeps to 25 metric columns): images flagged."""
    return {"flagged": len({row["index"] for row in result.issues})}


def report(result: ReviewResult) -> dict:
    """The detail: images, cross-validated accuracy, issues by kind and by class, auto-dropped by kind."""
    summary = result.summary
    by_class = {cls: sum(counts.values()) for cls, counts in summary["by_class"].items()}
    return {**metrics(result), "images": summary["images"], "cv_accuracy": summary["cv_accuracy"],
            "issues": summary["issues"], "issues_by_class": by_class, "auto_drop": summary["auto_drop"]}


def cards(result: ReviewResult, images: Sequence[Path], paths: Sequence[str]) -> list[dict]:
    """One review-page card per row of issues.csv, in its order; auto-dropped images carry their reason."""
    dropped = {d["index"]: d["reason"] for d in result.auto_drop}
    return [{"sha256": r["sha256"], "path": paths[r["index"]], "image": Path(images[r["index"]]),
             "class": r["class"], "issue": r["issue"], "score": float(r["score"]),
             "suggested_class": r["suggested_class"], "auto_drop": r["index"] in dropped, "flagged": r["flagged"],
             "reason": dropped.get(r["index"]) or _explanation(result, r, paths)} for r in result.listed]


def _explanation(result: ReviewResult, row: dict, paths: Sequence[str]) -> str:
    """Why the row is there; a near-duplicate names its twin's path."""
    why = result.details.get((row["index"], row["issue"]), "")
    if row["issue"] == "near_duplicate" and row["index"] in result.duplicate_of:
        why = f"{why}: {paths[result.duplicate_of[row['index']]]}" if why else paths[result.duplicate_of[row["index"]]]
    return why


def page_summary(result: ReviewResult) -> dict:
    """The counts the page shows at its top (numbers, or one level of {name: number})."""
    summary = result.summary
    return {"images": summary["images"], "cross-validated accuracy": summary["cv_accuracy"],
            "issues": summary["issues"], "listed below threshold": len(result.below_threshold),
            f"auto_drop ({summary['auto_drop_mode']})": summary["auto_drop"],
            "images per class": summary["class_imbalance"]["counts"]}


def write_page(out_html: Path, result: ReviewResult, images: Sequence[Path], paths: Sequence[str],
               classes: list[str]) -> None:
    from imgclass.review.review_page import write_review_page

    write_review_page(out_html, cards(result, images, paths), classes, page_summary(result))


def summary_png(result: ReviewResult, classes: list[str], path: Path) -> Path:
    """Issues per class (stacked by kind) beside the suspicion scores' histogram."""
    from imgclass.plots import plt, save_png  # plots.py selects the Agg backend first

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = np.zeros(len(classes))
    for kind in ISSUE_KINDS:
        counts = np.array([result.summary["by_class"][c][kind] for c in classes])
        left.bar(classes, counts, bottom=bottom, label=kind)
        bottom += counts
    left.set_title(f"issues per class ({result.summary['images']} images)")
    left.tick_params(axis="x", rotation=45)
    left.legend(fontsize=8)
    right.hist(result.suspicion, bins=40, color="tab:gray")
    right.set_yscale("log")
    right.set_title("suspicion: 1 - p(given class) x typicality")
    right.set_xlabel("suspicion (higher = more likely mislabelled or off-topic)")
    fig.tight_layout()
    return save_png(fig, path)


class LabelledFolder(NamedTuple):
    classes: list[str]
    images: list[Path]
    labels: list[str]
    sha256s: list[str]  # of the RGB pixels (images.sha256_of_pixels), as validate names data/clean's files
    phashes: list[int]  # 64-bit perceptual hashes, as validate groups near-duplicates by


def labelled_folder(src: Path) -> LabelledFolder:
    """Every visible file Pillow decodes in SRC/<class>/**, decoded once for its two hashes."""
    from concurrent.futures import ThreadPoolExecutor

    from imgclass.data.images import ImageRejected, decode_rgb, perceptual_hash, sha256_of_pixels

    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder; pass a folder with one sub-folder per class")
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    files_by_class = [(path, cls) for cls in classes for path in sorted((src / cls).rglob("*"))
                      if path.is_file() and not any(part.startswith(".") for part in path.relative_to(src).parts)]

    def pixel_hashes(path: Path) -> tuple[str, int] | None:
        try:
            img = decode_rgb(path)
        except (ImageRejected, OSError):  # not an image: skipped, like a README in a class folder
            return None
        return sha256_of_pixels(img), perceptual_hash(img)

    with ThreadPoolExecutor(max_workers=4) as pool:
        hashes = list(pool.map(pixel_hashes, [path for path, _ in files_by_class]))
    kept = [(path, cls, *both) for (path, cls), both in zip(files_by_class, hashes) if both is not None]
    if len({cls for _, cls, _, _ in kept}) < 2:
        raise ValueError(f"{src}: images in fewer than 2 class folders; expected {src}/<class>/<images>")
    return LabelledFolder(classes, *(list(column) for column in zip(*kept)))
