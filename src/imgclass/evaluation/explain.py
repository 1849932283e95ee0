"""What the model looks at and where it fails: penultimate features (t-SNE), Grad-CAM, top losses.

Images come as uint8 N x H x W x 3 (as `split.load_split` gives them), except `gradcam`, which takes
uint8 N x 3 x H x W like `Preprocessing.normalize`. PNGs are written atomically through `plots.save_png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgclass.model import models
from imgclass.model.preprocess import Preprocessing
from imgclass.plots import plt, save_png  # plt from plots: the headless backend is already chosen

MIN_TSNE_POINTS = 2
TSNE_ITERATIONS = 500


def _normalized_batches(prep: Preprocessing, images: np.ndarray, device: torch.device | str,
                        batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 N x H x W x 3 images as normalised float batches on device."""
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size])).permute(0, 3, 1, 2)
        yield prep.normalize(batch.to(device))


@torch.no_grad()
def penultimate_features(model: nn.Module, prep: Preprocessing, images: np.ndarray, device: torch.device | str = "cpu",
                         batch_size: int = 256) -> np.ndarray:
    """N x D: what the classifier head (the last Linear layer) receives, for any registry architecture."""
    model.eval()
    with models.head_inputs(model) as captured:
        for batch in _normalized_batches(prep, images, device, batch_size):
            model(batch)
    return models.stacked_head_inputs(model, captured)


def tsne_png(features: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, seed: int = 0,
             max_points: int = 1000) -> Path:
    """A 2-D t-SNE map of the features, one colour per class, of at most `max_points` test images
    drawn at random: Barnes-Hut t-SNE of 1,500 points took 7 s on 2 cores, a third of an evaluation."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(features), min(max_points, len(features)), replace=False))
    x, y = np.asarray(features[keep], dtype=np.float32), np.asarray(labels)[keep]
    fig, ax = plt.subplots(figsize=(7, 6))
    if len(x) < MIN_TSNE_POINTS:  # t-SNE needs its perplexity (at least 1) below the number of points
        ax.text(0.5, 0.5, f"{len(x)} test image(s): too few for a t-SNE map", ha="center", va="center")
        ax.axis("off")
        return save_png(fig, path)
    if x.shape[1] > 50:  # the usual PCA step first: faster, and less noise for t-SNE's neighbours
        x = PCA(n_components=min(50, len(x)), random_state=seed).fit_transform(x)
    perplexity = min(30.0, max(1.0, (len(x) - 1) / 3))  # must stay below the number of points
    # 500 iterations, not sklearn's 1,000: half the time, and on 1,000 Fashion-MNIST test images the map
    # is the same one (KL 0.891 against 0.872; a 10-NN classifier in 2-D, 0.710 against 0.714).
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=TSNE_ITERATIONS,
              random_state=seed).fit_transform(x)

    colours = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for i, name in enumerate(classes):
        mask = y == i
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, color=colours(i % colours.N), label=name, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of penultimate features ({len(x)} test images)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2, frameon=False)
    return save_png(fig, path)


def gradcam_layer(model: nn.Module, sample: torch.Tensor) -> nn.Conv2d:
    """The last Conv2d to run whose output is still a map (more than 1 x 1) for inputs like `sample`.

    Execution order, not registration order, and a spatial map: squeeze-excitation convolutions
    run on 1 x 1, and small inputs shrink a resnet's last block to 1 x 1, which would give a flat map.
    """
    ran: list[tuple[nn.Conv2d, int]] = []
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    handles = [c.register_forward_hook(lambda m, _i, out: ran.append((m, out.shape[-2] * out.shape[-1])))
               for c in convs]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    spatial = [m for m, area in ran if area > 1]
    return spatial[-1] if spatial else ran[-1][0]


def gradcam(model: nn.Module, prep: Preprocessing, images_uint8_nchw: np.ndarray | torch.Tensor,
            target_classes: np.ndarray | list[int], batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps, N x H x W in [0, 1] at the images' own size, for each image's target class.

    The map is ReLU(sum_k mean(dscore/dA_k) * A_k) over the channels A_k of `gradcam_layer`, scaled
    to peak at 1; all zeros where nothing in the image speaks for the class.
    """
    device = next(model.parameters()).device
    images = torch.as_tensor(np.asarray(images_uint8_nchw))
    targets = torch.as_tensor(np.asarray(target_classes), dtype=torch.long)
    model.eval()  # BatchNorm on running statistics, dropout off: the predictions being explained
    if not len(images):
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    layer = gradcam_layer(model, prep.normalize(images[:1].to(device)))
    maps = [_gradcam_batch(model, layer, prep.normalize(images[s:s + batch_size].to(device)),
                           targets[s:s + batch_size].to(device)) for s in range(0, len(images), batch_size)]
    cams = F.interpolate(torch.cat(maps)[:, None], size=tuple(images.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0].clamp_min(0)
    peak = cams.amax(dim=(1, 2), keepdim=True)  # scaled after resizing, so every map reaches 1
    return (cams / torch.where(peak > 0, peak, 1)).numpy()


def _gradcam_batch(model: nn.Module, layer: nn.Conv2d, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unscaled class activation maps at the layer's resolution."""
    kept: list[torch.Tensor] = []

    def keep_activation(_module, _inputs, output):
        kept.append(output)
        return output.clone()  # the network goes on with a copy: an in-place ReLU must not overwrite A

    handle = layer.register_forward_hook(keep_activation)
    try:
        with torch.enable_grad():
            logits = model(x.requires_grad_(True))  # a graph to A even when every weight is frozen
            score = logits.gather(1, targets[:, None]).sum()
            # the gradient at A alone, which is what a backward hook would see, without filling .grad
            (grads,) = torch.autograd.grad(score, kept[0])
    finally:
        handle.remove()
    return F.relu((grads.mean(dim=(2, 3), keepdim=True) * kept[0].detach()).sum(dim=1)).float().cpu()


def sample_right_and_wrong(labels: np.ndarray, predicted: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of up to n predictions, half right and half wrong where there are enough of each."""
    rng = np.random.default_rng(seed)
    right, wrong = np.flatnonzero(predicted == labels), np.flatnonzero(predicted != labels)
    n_wrong = min(len(wrong), max(n // 2, n - len(right)))
    n_right = min(len(right), n - n_wrong)
    return np.concatenate([rng.choice(right, n_right, replace=False), rng.choice(wrong, n_wrong, replace=False)])


def gradcam_png(model: nn.Module, prep: Preprocessing, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                classes: list[str], path: Path, n: int = 8, seed: int = 0) -> Path:
    """A sample of right (green) and wrong (red) test predictions: each image over its Grad-CAM overlay."""
    predicted = probs.argmax(axis=1)
    chosen = sample_right_and_wrong(labels, predicted, n, seed)
    picked = np.array(images[chosen])
    heatmaps = gradcam(model, prep, picked.transpose(0, 3, 1, 2), predicted[chosen])
    cols = max(1, min(len(chosen), 8))
    rows = -(-len(chosen) // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.9 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (i, image, heat) in enumerate(zip(chosen, picked, heatmaps)):
        top, bottom = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        top.imshow(image)
        top.set_title(f"{classes[labels[i]]} / {classes[predicted[i]]}\n({probs[i, predicted[i]]:.2f})", fontsize=8,
                      color="green" if predicted[i] == labels[i] else "red")
        bottom.imshow(image)
        bottom.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.suptitle("Grad-CAM for the predicted class (true / pred (p))")
    return save_png(fig, path)


def top_losses_png(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path,
                   n: int = 12) -> Path:
    """The n test images with the highest cross-entropy: true, predicted, p(pred) and p(true)."""
    p_true = probs[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(p_true, 1e-12, None))
    order = np.argsort(-loss, kind="stable")[:n]
    predicted = probs.argmax(axis=1)
    cols = max(1, min(len(order), 6))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        ax.imshow(np.asarray(images[i]))
        ax.set_title(f"true {classes[labels[i]]}\npred {classes[predicted[i]]} ({probs[i, predicted[i]]:.2f})\n"
                     f"p(true) {p_true[i]:.2f}  loss {loss[i]:.2f}", fontsize=8)
    fig.suptitle("top losses")
    return save_png(fig, path)
