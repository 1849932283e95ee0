from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from imgclass.data.sources.preview import CELL_INCHES, save_sample_grid


def save_png(path: Path, color, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")


def count_pixels(image: Image.Image, color) -> int:
    return {rgb: n for n, rgb in image.convert("RGB").getcolors(maxcolors=1 << 24)}.get(color, 0)


def test_grid_has_one_row_per_class_and_copes_with_odd_folders(tmp_path):
    raw = tmp_path / "raw"
    for i in range(6):
        save_png(raw / "red" / f"{i:02d}.png", (255, 0, 0), size=(2000, 1500) if i == 0 else (40, 30))
    save_png(raw / "blue" / "a.png", (0, 0, 255))
    (raw / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (raw / "blue" / ".a.png.xyz.tmp").write_bytes(b"half-written")
    out = tmp_path / "plots" / "samples.png"

    save_sample_grid(raw, ["red", "blue", "absent"], out, per_class=4)

    with Image.open(out) as grid:
        assert grid.format == "PNG"
        assert grid.size == (round((CELL_INCHES * 4 + 1.2) * 80), round(CELL_INCHES * 3 * 80))
        # Four red samples (the 2000x1500 one shrunk), one blue: red covers ~4x the blue area.
        red, blue = count_pixels(grid, (255, 0, 0)), count_pixels(grid, (0, 0, 255))
        rows = np.array_split(np.asarray(grid.convert("RGB")).astype(int), 3)  # one band per class
    assert blue > 100 and 3 * blue < red < 5 * blue
    # each class in its own row, in the order given; the absent class's row shows no image
    assert [(count_color(band, (255, 0, 0)), count_color(band, (0, 0, 255))) for band in rows] == [
        (red, 0), (0, blue), (0, 0)]
    assert not (np.ptp(rows[2], axis=2) > 0).any(), "the row of a class without images is drawn in colour"
    assert [p.name for p in out.parent.iterdir()] == ["samples.png"], "written atomically, no temp file"


def count_color(pixels: np.ndarray, color) -> int:
    return int((pixels == color).all(axis=2).sum())


def test_grid_of_empty_raw_dir(tmp_path):
    out = tmp_path / "samples.png"
    save_sample_grid(tmp_path / "missing", ["a", "b"], out, per_class=2)
    with Image.open(out) as grid:
        # still a row per class, two cells wide, as if the images were there
        assert grid.size == (round((CELL_INCHES * 2 + 1.2) * 80), round(CELL_INCHES * 2 * 80))
        pixels = np.asarray(grid.convert("RGB")).astype(int)
    assert not (np.ptp(pixels, axis=2) > 0).any(), "only black text on white: no image, no colour"
    # each row says so: its class name and "no images", in dark text
    assert all((band.min(axis=2) < 128).sum() > 50 for band in np.array_split(pixels, 2))
