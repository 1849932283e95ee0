"""Batch augmentation: random per image, applied to the whole batch at once, reproducible from the seed."""

import numpy as np
import pytest
import torch
from skimage import data

from imgclass.training.augment import augmentation
from imgclass.config.params import Augment
from imgclass.model.preprocess import Preprocessing

SIZE = 48


def photo_batch(n: int) -> torch.Tensor:
    """n copies of a real photo (skimage's astronaut, not left-right symmetric), uint8 N x 3 x 48 x 48."""
    from PIL import Image

    image = Preprocessing(SIZE, SIZE).to_uint8(Image.fromarray(data.astronaut()))
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).repeat(n, 1, 1, 1)


def test_nothing_switched_on_means_no_augmentation():
    assert augmentation(Augment(), SIZE) is None
    assert augmentation(Augment(mixup=0.4), SIZE) is None  # mixing is batch_mixing's job


def test_flips_are_drawn_per_image_and_are_exact():
    batch = photo_batch(64)
    torch.manual_seed(0)
    out = augmentation(Augment(hflip=True), SIZE)(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    original, mirrored = batch[0].float(), batch[0].float().flip(-1)
    flipped = [bool(torch.allclose(image, mirrored, atol=1e-3)) for image in out]
    kept = [bool(torch.allclose(image, original, atol=1e-3)) for image in out]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is either flipped or untouched
    assert 10 < sum(flipped) < 54  # about half of 64, not all or none


def test_crops_differ_per_image_stay_in_range_and_follow_the_seed():
    batch = photo_batch(16)
    augment = augmentation(Augment(random_resized_crop=0.3, rotation=20, color_jitter=0.4), SIZE)
    torch.manual_seed(1)
    first = augment(batch)
    torch.manual_seed(1)
    again = augment(batch)
    assert torch.equal(first, again)  # a resumed epoch augments exactly as the interrupted one did
    assert first.shape == (16, 3, SIZE, SIZE)
    assert first.min() >= 0 and first.max() <= 255
    distinct = {tuple(image.flatten()[::97].round().tolist()) for image in first}
    assert len(distinct) == 16


@pytest.mark.parametrize("options", [{"trivialaugment": True}, {"color_jitter": 0.3}, {"rotation": 45.0}])
def test_every_option_keeps_the_batch_shape_and_changes_pixels(options):
    batch = photo_batch(8)
    torch.manual_seed(2)
    out = augmentation(Augment(**options), SIZE)(batch)
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 255
    assert not torch.allclose(out, batch.float())


def test_floats_normalise_like_the_uint8_they_came_from_and_stay_untouched():
    batch = photo_batch(4)
    prep = Preprocessing(SIZE, 32)
    floats = batch.float()
    expected = prep.normalize(batch)
    assert torch.allclose(prep.normalize(floats), expected, atol=1e-6)
    assert torch.equal(floats, batch.float())  # normalize must not scale its input in place
