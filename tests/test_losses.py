import numpy as np
import pytest
import torch

from imgclass.training.losses import LOSSES, balanced_class_weights, make_loss


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("soft", [False, True])
def test_each_loss_backpropagates_and_prefers_the_right_answer(name, soft):
    targets = torch.tensor([0, 1, 2, 1])
    if soft:
        targets = torch.nn.functional.one_hot(targets, 3).float() * 0.8 + 0.2 / 3
    weight = torch.tensor([1.0, 2.0, 0.5])
    loss_fn = make_loss(name, weight, label_smoothing=0.1, focal_gamma=2.0)
    right = torch.eye(3)[[0, 1, 2, 1]] * 5
    wrong = torch.eye(3)[[1, 2, 0, 0]] * 5
    logits = wrong.clone().requires_grad_(True)
    loss = loss_fn(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    assert loss_fn(right, targets) < loss_fn(wrong, targets)


def test_focal_loss_down_weights_easy_examples():
    ce, focal = make_loss("cross_entropy"), make_loss("focal", focal_gamma=2.0)
    easy = torch.tensor([[6.0, 0.0]])
    y = torch.tensor([0])
    assert focal(easy, y) < 0.01 * ce(easy, y)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge")


def test_balanced_weights_favour_the_rare_class():
    weights = balanced_class_weights(np.array([0] * 90 + [1] * 10), 3)
    assert weights[1] == pytest.approx(100 / (2 * 10))
    assert weights[0] == pytest.approx(100 / (2 * 90))
    assert weights[2] == 1.0  # absent from the train split
