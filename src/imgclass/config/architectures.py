"""The registry's architecture names and their families, without importing torch: params.py checks
`arch` and `review.model` against them in every stage, most of which never build a network."""

from __future__ import annotations

TORCHVISION = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
               "mobilenet_v3_large", "efficientnet_b0", "densenet121")
SCRATCH_WIDTHS = {  # channels per block; each block is (conv-ReLU-BN) x depth, then max-pool
    "cnn_simple": ([32, 64], 1),
    "cnn_medium": ([32, 64, 128], 1),
    "cnn_deep": ([32, 64, 128, 256], 2),
}
ARCHITECTURES: dict[str, str] = {**{a: "scratch" for a in SCRATCH_WIDTHS},
                                 **{a: "torchvision" for a in TORCHVISION},
                                 "efficientnet_lite0": "timm"}
