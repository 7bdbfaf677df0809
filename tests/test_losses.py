"""Tests for lossbarcode.losses: per-network and batched task losses agree."""

import pytest
import torch

from lossbarcode import data, landscape, losses


def test_task_losses_and_errors():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    ce = losses.task_loss("classification")(logits, labels)
    assert torch.isclose(ce, torch.nn.functional.cross_entropy(logits, labels))
    assert float(losses.task_error("classification")(logits, labels)) == pytest.approx(1 / 3)

    assert float(losses.task_loss("regression")(torch.ones(2, 1), torch.zeros(2, 1))) == 1.0
    assert losses.task_error("regression") is None

    seq_logits = torch.zeros(1, 3, 4)
    seq_logits[0, 2, 1] = 5.0
    seq_logits[0, 1, 2] = 5.0
    targets = torch.tensor([[losses.IGNORE_INDEX, 3, 1]])
    assert float(losses.task_error("sequence")(seq_logits, targets)) == pytest.approx(0.5)
    loss = losses.task_loss("sequence")(seq_logits, targets)
    manual = torch.nn.functional.cross_entropy(seq_logits[0, 1:], targets[0, 1:])
    assert torch.isclose(loss, manual)

    with pytest.raises(ValueError, match="unknown task"):
        losses.task_loss("ranking")
    with pytest.raises(ValueError, match="unknown task"):
        losses.task_error("ranking")


def test_task_losses_work_under_vmap():
    ds = data.load("modadd", p=5, n_train=6)
    outputs = torch.randn(3, 6, 3, ds.n_outputs)
    loss = losses.task_loss("sequence")
    batched = torch.func.vmap(loss, in_dims=(0, None))(outputs, ds.y_train)
    assert torch.allclose(batched, torch.stack([loss(o, ds.y_train) for o in outputs]))


def test_batched_task_losses_match_data_losses():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 7, 5, generator=g)
    y = torch.randint(0, 5, (3, 7), generator=g)
    ce = losses.batched_task_loss("classification")(out, y)
    ref = torch.stack([losses.task_loss("classification")(out[b], y[b]) for b in range(3)])
    torch.testing.assert_close(ce, ref)
    seq_out = torch.randn(2, 4, 3, 6, generator=g)
    seq_y = torch.randint(0, 6, (2, 4, 3), generator=g)
    seq_y[:, :, :2] = losses.IGNORE_INDEX
    seq = losses.batched_task_loss("sequence")(seq_out, seq_y)
    ref = torch.stack([losses.task_loss("sequence")(seq_out[b], seq_y[b]) for b in range(2)])
    torch.testing.assert_close(seq, ref)
    reg_out, reg_y = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    reg = losses.batched_task_loss("regression")(reg_out, reg_y)
    ref = torch.stack([losses.task_loss("regression")(reg_out[b], reg_y[b]) for b in range(2)])
    torch.testing.assert_close(reg, ref)


def test_old_homes_reexport_the_losses():
    # data and landscape kept these names for compatibility; they must be the same objects.
    assert data.task_loss is losses.task_loss and data.task_error is losses.task_error
    assert data.IGNORE_INDEX == losses.IGNORE_INDEX
    assert landscape.batched_task_loss is losses.batched_task_loss
    assert losses.batched_loss_task(losses.batched_task_loss("regression")) == "regression"
    assert losses.batched_loss_task(losses.task_loss("regression")) is None
