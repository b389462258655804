import math

import pytest
import torch
import torch.nn.functional as F

from crome.train.loss import crome_loss, is_tie, pair_losses


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_tie_at_zero_margin_is_log2():
    assert pair_losses(t(0.0), t(0.5)).item() == pytest.approx(math.log(2), abs=1e-7)
    assert crome_loss(t(1.3), t(1.3), t(0.5)).item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("d", [-3.0, -0.5, 0.0, 0.7, 4.0])
def test_strict_pair_is_bradley_terry(d):
    assert pair_losses(t(d), t(1.0)).item() == pytest.approx(-F.logsigmoid(t(d)).item(), abs=1e-6)
    # By hand: -log sigmoid(d) = log(1 + e^-d)
    assert crome_loss(t(d + 1.0), t(1.0), t(1.0)).item() == pytest.approx(math.log1p(math.exp(-d)), abs=1e-5)


@pytest.mark.parametrize("d", [-2.0, 0.3, 2.0])
def test_tie_loss_by_hand_is_symmetric_and_above_log2(d):
    by_hand = 0.5 * (math.log1p(math.exp(-d)) + math.log1p(math.exp(d)))
    assert pair_losses(t(d), t(0.5)).item() == pytest.approx(by_hand, abs=1e-6)
    assert pair_losses(t(-d), t(0.5)).item() == pytest.approx(by_hand, abs=1e-6)
    assert by_hand > math.log(2)


def test_batch_is_mean_with_ties_weighted_by_lambda():
    chosen, rejected, pref = t(1.0, 0.5, 2.0), t(0.0, 0.0, 0.0), t(1.0, 0.5, 1.0)
    strict1, tie, strict2 = math.log1p(math.exp(-1.0)), 0.5 * (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(0.5))), math.log1p(math.exp(-2.0))
    for lam in (0.0, 0.3, 1.0, 2.5):
        expected = (strict1 + lam * tie + strict2) / 3
        assert crome_loss(chosen, rejected, pref, tie_weight=lam).item() == pytest.approx(expected, abs=1e-6)


def test_center_rewards_adds_mean_squared_pair_sum():
    chosen, rejected, pref = t(1.0, -0.5), t(0.5, 0.5), t(1.0, 0.5)
    base = crome_loss(chosen, rejected, pref).item()
    assert crome_loss(chosen, rejected, pref, center_rewards=0.1).item() == pytest.approx(base + 0.1 * (1.5**2 + 0.0**2) / 2, abs=1e-6)


def test_gradients_push_strict_apart_and_ties_together():
    chosen = torch.tensor([0.2, 0.9], requires_grad=True)
    rejected = torch.tensor([0.0, 0.1], requires_grad=True)
    crome_loss(chosen, rejected, t(1.0, 0.5)).backward()
    assert chosen.grad[0] < 0 < rejected.grad[0]  # strict: raise chosen, lower rejected
    assert chosen.grad[1] > 0 > rejected.grad[1]  # tie with d > 0: pull the two together
    # A tie at d = 0 is at its minimum: no gradient.
    c, r = torch.tensor([0.4], requires_grad=True), torch.tensor([0.4], requires_grad=True)
    crome_loss(c, r, t(0.5)).backward()
    assert c.grad.abs().item() < 1e-7


def test_tie_weight_zero_ignores_ties_entirely():
    chosen = torch.tensor([0.2, 3.0], requires_grad=True)
    crome_loss(chosen, t(0.0, 0.0), t(1.0, 0.5), tie_weight=0.0).backward()
    assert chosen.grad[1].item() == 0.0


def test_is_tie_survives_float_round_trips():
    assert is_tie(torch.tensor([0.5, 1.0], dtype=torch.bfloat16)).tolist() == [True, False]


# Worked by hand with d chosen so that sigmoid is a simple fraction: sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
# Strict pairs at d = ln 3 and d = 0:  -log(3/4) = log(4/3)  and  -log(1/2) = log 2.
# A tie at d = ln 3:  -1/2 [log(3/4) + log(1/4)] = 1/2 log(16/3).
# Batch: strict (ln 3), strict (0), tie (ln 3), tie (0; its loss is log 2). S = 2 strict, T = 2 ties, N = 4.
LN3 = math.log(3)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 2.0])
def test_both_normalizations_against_values_worked_by_hand(lam):
    chosen, rejected, pref = t(LN3, 0.0, LN3, 0.7), t(0.0, 0.0, 0.0, 0.7), t(1.0, 1.0, 0.5, 0.5)
    # "pairs": (log(4/3) + log 2 + lam * (1/2 log(16/3) + log 2)) / 4
    pairs = (math.log(4 / 3) + math.log(2) + lam * (0.5 * math.log(16 / 3) + math.log(2))) / 4
    # "per_kind": (log(4/3) + log 2) / 2 + lam * (1/2 log(16/3) + log 2) / 2
    per_kind = (math.log(4 / 3) + math.log(2)) / 2 + lam * (0.5 * math.log(16 / 3) + math.log(2)) / 2
    assert crome_loss(chosen, rejected, pref, tie_weight=lam).item() == pytest.approx(pairs, abs=1e-6)
    assert crome_loss(chosen, rejected, pref, tie_weight=lam, normalization="per_kind").item() == pytest.approx(per_kind, abs=1e-6)
    # With as many ties as strict pairs, the mean over all pairs is half the sum of the two means.
    assert pairs == pytest.approx(per_kind / 2)


def test_per_kind_weighs_ties_by_lambda_whatever_their_share():
    # One strict pair (d = ln 3) and three ties at d = ln 3: per_kind = log(4/3) + lam * 1/2 log(16/3); pairs divides by 4.
    chosen, rejected, pref = t(LN3, LN3, LN3, LN3), t(0.0, 0.0, 0.0, 0.0), t(1.0, 0.5, 0.5, 0.5)
    assert crome_loss(chosen, rejected, pref, normalization="per_kind").item() == pytest.approx(math.log(4 / 3) + 0.5 * math.log(16 / 3), abs=1e-6)
    assert crome_loss(chosen, rejected, pref).item() == pytest.approx((math.log(4 / 3) + 3 * 0.5 * math.log(16 / 3)) / 4, abs=1e-6)


def test_per_kind_with_one_kind_missing_is_that_kind_alone():
    assert crome_loss(t(LN3), t(0.0), t(1.0), normalization="per_kind").item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    assert crome_loss(t(LN3), t(0.0), t(0.5), tie_weight=2.0, normalization="per_kind").item() == pytest.approx(math.log(16 / 3), abs=1e-6)
    with pytest.raises(ValueError, match="per_kind"):
        crome_loss(t(0.0), t(0.0), t(1.0), normalization="mean")
