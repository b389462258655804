import math

import pytest
import torch

from crome.train.pairpm.encode import fit_pair
from crome.train.pairpm.loss import order_averaged_probability, pairpm_loss, pairpm_losses


def nls(x):  # -log sigmoid(x), by hand
    return math.log(1 + math.exp(-x))


def test_strict_pair_targets_one_then_zero():
    # chosen first: target 1 -> -log s(2); chosen second: target 0 -> -log s(-(-1)) = -log s(1)
    got = pairpm_losses(torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([1.0]))
    assert got.item() == pytest.approx(0.5 * (0.126928 + 0.313262), abs=1e-5)
    assert got.item() == pytest.approx(0.5 * (nls(2.0) + nls(1.0)), abs=1e-6)


def test_tie_is_half_in_both_orders():
    got = pairpm_losses(torch.tensor([0.3]), torch.tensor([0.5]), torch.tensor([0.5]))
    ab = 0.5 * (0.554355 + 0.854355)  # -1/2 [log s(0.3) + log s(-0.3)]
    ba = 0.5 * (0.474077 + 0.974077)  # -1/2 [log s(0.5) + log s(-0.5)]
    assert got.item() == pytest.approx(0.5 * (ab + ba), abs=1e-5)
    # minimal where both orders say 0: log 2
    assert pairpm_losses(torch.zeros(1), torch.zeros(1), torch.tensor([0.5])).item() == pytest.approx(math.log(2))


def test_batch_mean_and_tie_weight():
    d_ab, d_ba, p = torch.tensor([2.0, 0.3]), torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 0.5])
    strict, tie = 0.220095, 0.714216
    assert pairpm_loss(d_ab, d_ba, p).item() == pytest.approx((strict + tie) / 2, abs=1e-5)
    assert pairpm_loss(d_ab, d_ba, p, tie_weight=2.0).item() == pytest.approx((strict + 2 * tie) / 2, abs=1e-5)
    assert pairpm_loss(d_ab, d_ba, p, tie_weight=0.0).item() == pytest.approx(strict / 2, abs=1e-5)


def test_a_position_only_model_is_not_rewarded():
    # A model that always prefers slot A (d = +3 in both orders) is right once and wrong once per strict pair.
    always_a = pairpm_losses(torch.tensor([3.0]), torch.tensor([3.0]), torch.tensor([1.0])).item()
    consistent = pairpm_losses(torch.tensor([3.0]), torch.tensor([-3.0]), torch.tensor([1.0])).item()
    assert always_a == pytest.approx(0.5 * (nls(3.0) + nls(-3.0)), abs=1e-6) and consistent < always_a
    assert order_averaged_probability(torch.tensor([3.0]), torch.tensor([3.0])).item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "lens,budget,kept",
    [
        ((10, 20, 30), 100, (10, 20, 30)),  # fits
        ((100, 300, 300), 200, (50, 75, 75)),  # prompt to a quarter, answers equal halves of the rest
        ((100, 300, 50), 200, (50, 100, 50)),  # a short answer gives its unused share to the other
        ((10, 300, 300), 200, (10, 95, 95)),  # a short prompt keeps everything
    ],
)
def test_fair_truncation(lens, budget, kept):
    assert fit_pair(*lens, budget) == kept
    p, a, b = lens
    assert fit_pair(p, b, a, budget) == (kept[0], kept[2], kept[1])  # symmetric in the answers
    assert sum(kept) <= max(budget, sum(lens) if sum(lens) <= budget else 0) or sum(kept) <= budget
