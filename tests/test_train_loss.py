"""The training objective: token cross-entropy in fp32 whatever the logits' dtype; a dense
model's objective is that loss alone, with no router statistics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from growlm.train.distributed import DistContext
from growlm.train.loss import Objective, token_loss


def test_token_loss_is_fp32_cross_entropy_over_every_position():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11).bfloat16()  # [B, T, V]
    targets = torch.randint(0, 11, (2, 3))
    want = F.cross_entropy(logits.float().reshape(6, 11), targets.reshape(6))
    got = token_loss(logits, targets)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    total = token_loss(logits, targets, reduction="sum")
    assert torch.allclose(total, want * 6, rtol=1e-6, atol=0)


def test_a_dense_objective_is_the_token_loss():
    logits, targets = torch.randn(2, 3, 11), torch.randint(0, 11, (2, 3))
    objective = Objective(token_loss)
    loss, minimised = objective(logits, targets)
    assert torch.equal(loss, token_loss(logits, targets)) and minimised is loss
    assert objective.metrics(DistContext()) == {}
    objective.close()
