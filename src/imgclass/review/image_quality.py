"""Low-quality images: very dark, blurry or low-information, measured by cleanvision's image properties.

cleanvision's `Imagelab` takes ~33 s for 10,000 small PNGs on 2 cores (a process pool and pandas per
issue type); its property calculators called directly take ~6 s, and give the same scores. Scores are
cleanvision's (1 = fine, 0 = worst) with its default normalisation; `severity` is 1 - score, so that
0.7 corresponds to cleanvision's own thresholds (0.32 dark, 0.29 blurry, 0.3 low information).
Severities depend on the pixels only: with a cache folder they are kept by sha256 (quality-vN.npz
beside the embeddings), so a rerun measures only new images.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from cleanvision.issue_managers.image_property import BlurrinessProperty, BrightnessProperty, EntropyProperty

from imgclass.data.images import decode_rgb
from imgclass.progress import track
from imgclass.review import sha_cache

KINDS = ("dark", "blurry", "low_information")
QUALITY_VERSION = 1  # bump when a measurement changes: cached severities become stale
# cleanvision's ImagePropertyIssueManager defaults for turning raw properties into scores.
_SCORE_PARAMS = {"dark": {}, "blurry": {"normalizing_factor": 0.01, "color_threshold": 0.18},
                 "low_information": {"normalizing_factor": 0.1}}


def _properties() -> dict:
    return {"dark": BrightnessProperty("dark"), "blurry": BlurrinessProperty(),
            "low_information": EntropyProperty()}


def measure(path: Path) -> dict:
    """cleanvision's raw properties of one image (brightness percentiles, edge variance, entropy)."""
    rgb = decode_rgb(path)
    raw: dict = {}
    for prop in _properties().values():
        raw.update(prop.calculate(rgb))
    return raw


def severities(paths: Sequence[Path], sha256s: Optional[Sequence[str]] = None,
               cache_dir: Optional[Path] = None, workers: int = 2) -> pd.DataFrame:
    """One row per image, one column per kind: 1 - cleanvision's score, in [0, 1], higher = worse.
    With sha256s and cache_dir, images measured before are read from the cache."""
    cache_file = Path(cache_dir) / f"quality-v{QUALITY_VERSION}.npz" if cache_dir is not None and sha256s else None
    cached = sha_cache.read(cache_file, "severity")
    keys = list(sha256s) if cache_file else [str(i) for i in range(len(paths))]
    todo = {key: Path(path) for key, path in zip(keys, paths) if key not in cached}
    if todo:
        cached.update(zip(todo, _measure_severities(list(todo.values()), workers)))
        if cache_file:
            sha_cache.write(cache_file, cached, "severity")
    values = np.array([cached[key] for key in keys]).reshape(len(keys), len(KINDS))
    return pd.DataFrame(values, columns=list(KINDS))


def _measure_severities(paths: list[Path], workers: int) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow's filters release the GIL
        raw = pd.DataFrame(list(track(pool.map(measure, paths), "review: quality", total=len(paths))))
    props = _properties()
    columns = []
    for kind in KINDS:
        scores = props[kind].get_scores(raw, kind, **_SCORE_PARAMS[kind])
        columns.append(1.0 - scores[f"{kind}_score"].to_numpy(dtype=float))
    return np.clip(np.stack(columns, axis=1), 0.0, 1.0)


def worst_kind(severity: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Per image: the highest severity and which kind it is."""
    values = severity[list(KINDS)].to_numpy()
    idx = values.argmax(axis=1) if len(values) else np.zeros(0, int)
    return values.max(axis=1) if len(values) else np.zeros(0), [KINDS[i] for i in idx]
