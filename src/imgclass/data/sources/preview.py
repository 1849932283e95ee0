"""A contact sheet of the raw images: one row per class, a few samples each, to eyeball what a
source delivered before training on it."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from imgclass import files

THUMBNAIL = 128  # pixels; keeps memory flat however large the raw images are
CELL_INCHES = 1.3


def save_sample_grid(raw_dir: Path, classes: list[str], out_png: Path, per_class: int = 8) -> None:
    """Write a PNG grid of up to `per_class` images of each class (first by file name; names are
    content hashes, so this is an arbitrary but stable sample)."""
    raw_dir = Path(raw_dir)
    # Figure + Agg canvas directly rather than pyplot: no global backend state, no GUI, thread-safe.
    figure = Figure(figsize=(CELL_INCHES * per_class + 1.2, CELL_INCHES * max(1, len(classes))))
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(1, len(classes)), per_class, squeeze=False)
    for row, cls in enumerate(classes):
        thumbnails = sample_thumbnails(raw_dir / cls, per_class)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if col < len(thumbnails):
                ax.imshow(thumbnails[col])
        axes[row][0].set_ylabel(f"{cls}\n({count_images(raw_dir / cls)})", rotation=0, ha="right", va="center")
        if not thumbnails:
            axes[row][0].text(0.5, 0.5, "no images", ha="center", va="center", transform=axes[row][0].transAxes)
    figure.tight_layout()
    with files.atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png", dpi=80)


def image_files(class_dir: Path) -> list[Path]:
    """Stored images of a class, skipping hidden files (temp files of writes in progress)."""
    if not class_dir.is_dir():
        return []
    return sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def count_images(class_dir: Path) -> int:
    return len(image_files(class_dir))


def sample_thumbnails(class_dir: Path, count: int) -> list[Image.Image]:
    thumbnails = []
    for path in image_files(class_dir):
        if len(thumbnails) == count:
            break
        try:
            with Image.open(path) as image:
                image.thumbnail((THUMBNAIL, THUMBNAIL))
                thumbnails.append(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # unreadable files are the validate stage's business; show the next one
    return thumbnails
