"""Image embeddings from a pretrained backbone, cached by image content.

`embed_images` returns one L2-normalised feature vector per image: the backbone of `build_model`
with its classifier replaced by the identity (global-pooled features). Images are decoded and squashed
to `image_size` as training squashes them (data/decode.py), normalised as the weights
were trained, and optionally averaged with their mirror image.

The cache is one `embeddings.npz` (sha256 + features) per backbone key — model, image size, hflip
and EMBEDDING_VERSION — so a changed model or size never reuses old vectors, and adding images
embeds only the new ones. Entries of images no longer present are kept: a smaller review of the
same data reuses them.

On the CPU the backbone runs in ONNX Runtime (2-3x faster than eager PyTorch for efficientnet's
depthwise convolutions on 2 cores); its ONNX file is exported once into the cache, with the mean and
std its inputs need, so that a review with the file in place imports neither torch nor timm.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from imgclass.data.decode import squashed_batches
from imgclass.devices import usable_cpus
from imgclass.files import atomic_path
from imgclass.progress import Progress
from imgclass.review import sha_cache

# Bump when preprocessing changes: every cached vector becomes stale (2: alpha on white; 3: squashed as
# Preprocessing.to_uint8 squashes, whose reducing_gap differs from plain bicubic on large downscales).
EMBEDDING_VERSION = 3
CACHE_FILE = "embeddings.npz"
ONNX_FILE = "backbone.onnx"


@dataclass(frozen=True)
class BackboneSpec:
    model: str
    image_size: int
    hflip: bool = False

    @property
    def key(self) -> str:
        """The cache folder's name: vectors from another model, size or version never mix."""
        return f"{self.model.replace('/', '--')}-{self.image_size}px{'-hflip' if self.hflip else ''}-v{EMBEDDING_VERSION}"


@dataclass
class Embeddings:
    features: np.ndarray  # N x D float32, rows L2-normalised, in input order
    embedded: int         # images the backbone ran on (the rest came from the cache)


def embed_images(paths: Sequence[Path], sha256s: Sequence[str], spec: BackboneSpec,
                 cache_dir: Optional[Path] = None, device: str = "cpu", batch_size: int = 128) -> Embeddings:
    """One normalised embedding per image; images whose sha256 the cache holds are not decoded."""
    if len(paths) != len(sha256s):
        raise ValueError(f"{len(paths)} images but {len(sha256s)} sha256s")
    folder = Path(cache_dir) / spec.key if cache_dir is not None else None
    cached = load_cache(folder)
    todo = {}  # sha256 -> path, once per distinct image
    for path, sha in zip(paths, sha256s):
        if sha not in cached and sha not in todo:
            todo[sha] = Path(path)
    if todo:
        # Rounded as the cache stores them, so that a first run and a rerun give the same review.
        new = _run_backbone(list(todo.values()), spec, device, batch_size, folder).astype(np.float16)
        cached.update(zip(todo, new))
        if folder is not None:
            save_cache(folder, cached)
    features = np.stack([cached[sha] for sha in sha256s]) if sha256s else np.zeros((0, 0), np.float32)
    return Embeddings(features=features.astype(np.float32), embedded=len(todo))


def load_cache(folder: Optional[Path]) -> dict[str, np.ndarray]:
    return sha_cache.read(folder / CACHE_FILE if folder is not None else None, "features")


def save_cache(folder: Path, vectors: dict[str, np.ndarray]) -> None:
    sha_cache.write(folder / CACHE_FILE, vectors, "features", np.float16)  # half the disk; cosine unaffected


def _run_backbone(paths: list[Path], spec: BackboneSpec, device: str, batch_size: int,
                  folder: Optional[Path]) -> np.ndarray:
    forward, (mean, std) = _backbone(spec, device, folder)
    out = []
    with Progress(len(paths), "review: embedding") as progress:
        for batch in squashed_batches(paths, spec.image_size, batch_size):
            x = ((batch.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
            x = np.ascontiguousarray(x)
            feats = forward(x)
            if spec.hflip:
                feats = feats + forward(np.ascontiguousarray(x[..., ::-1]))
            out.append(feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12))
            progress.update(len(batch))
    return np.concatenate(out).astype(np.float32)


Forward = Callable[[np.ndarray], np.ndarray]
Normalization = tuple[np.ndarray, np.ndarray]  # mean, std per channel


def _mean_std(model: str) -> Normalization:
    """What the weights were trained on: tf_efficientnet_lite's [-1, 1], timm's pretrained_cfg, torchvision's ImageNet statistics."""
    from imgclass.model.models import input_normalization

    norm = input_normalization(model)
    return np.array(norm["mean"], np.float32), np.array(norm["std"], np.float32)


def feature_network(model: str):
    """The pretrained network with its classifier replaced by the identity: pooled features out."""
    from torch import nn

    from imgclass.model.models import build_model, head_name

    network = build_model(model, 2, weights="imagenet")  # the head is dropped, its size is irrelevant
    parent_name, _, attr = head_name(network).rpartition(".")
    setattr(network.get_submodule(parent_name) if parent_name else network, attr, nn.Identity())
    return network.eval()


def _backbone(spec: BackboneSpec, device: str, folder: Optional[Path]) -> tuple[Forward, Normalization]:
    """N x 3 x H x W float32 -> N x D features, and the normalisation its inputs need: ONNX Runtime on
    the CPU, PyTorch elsewhere."""
    if device == "cpu":
        return _onnx_backbone(spec, folder)
    import torch

    network = feature_network(spec.model).to(device, memory_format=torch.channels_last)

    def forward_torch(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x).to(device, memory_format=torch.channels_last)
            return network(t).float().cpu().numpy()
    return forward_torch, _mean_std(spec.model)


def _onnx_backbone(spec: BackboneSpec, folder: Optional[Path]) -> tuple[Forward, Normalization]:
    """A cached ONNX file needs neither torch nor timm (7-9 s of imports and weights): the network is
    built only to export it, and the file carries the normalisation its inputs need."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cpus()
    options.log_severity_level = 3  # errors only
    if folder is not None:  # exported once per backbone key, beside its vectors
        if not (folder / ONNX_FILE).exists():
            _export_onnx(spec, folder / ONNX_FILE)
        session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    else:
        with tempfile.TemporaryDirectory(prefix="imgclass-onnx-") as tmp:  # the session holds the model
            _export_onnx(spec, Path(tmp) / ONNX_FILE)
            session = ort.InferenceSession(str(Path(tmp) / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    return (lambda x: session.run(None, {"images": x})[0]), _onnx_normalization(session, spec.model)


def _onnx_normalization(session, model: str) -> Normalization:
    """The mean and std written into the ONNX file at export; a file exported before they were is
    normalised as its model says (importing it)."""
    meta = session.get_modelmeta().custom_metadata_map
    if "mean" not in meta or "std" not in meta:
        return _mean_std(model)
    return (np.array(json.loads(meta["mean"]), np.float32), np.array(json.loads(meta["std"]), np.float32))


def _export_onnx(spec: BackboneSpec, path: Path) -> None:
    import warnings

    import onnx
    import torch

    network = feature_network(spec.model)
    mean, std = _mean_std(spec.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(network, torch.zeros(1, 3, spec.image_size, spec.image_size), str(tmp),
                          input_names=["images"], output_names=["features"], dynamic_axes={"images": {0: "n"}},
                          dynamo=False)
        exported = onnx.load(str(tmp))
        onnx.helper.set_model_props(exported, {"mean": json.dumps(mean.tolist()), "std": json.dumps(std.tolist())})
        onnx.save(exported, str(tmp))
