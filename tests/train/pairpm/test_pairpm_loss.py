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


# Worked by hand, as tests/train/test_loss.py does for Bradley-Terry, with logits chosen so that sigmoid is a simple
# fraction: sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2. Each pair's loss is the mean of its two orders
# (ab target p, ba target 1 - p):
#   strict (d_ab, d_ba) = (ln 3, -ln 3): ab -log(3/4) = log(4/3); ba -log sigmoid(ln 3) = log(4/3)  -> log(4/3)      = 0.287682
#   strict (0, ln 3):                     ab -log(1/2) = log 2;    ba -log sigmoid(-ln 3) = log 4    -> 3/2 log 2      = 1.039721
#   tie    (0, 0):                        log 2 in both orders                                     -> log 2          = 0.693147
#   tie    (ln 3, ln 3):                  -1/2 [log(3/4) + log(1/4)] = 1/2 log(16/3) in both orders -> 1/2 log(16/3) = 0.836988
LN3 = math.log(3)
STRICT_BY_HAND = (math.log(4 / 3), 1.5 * math.log(2))
TIES_BY_HAND = (math.log(2), 0.5 * math.log(16 / 3))


def test_the_pair_losses_worked_by_hand():
    d_ab, d_ba, p = torch.tensor([LN3, 0.0, 0.0, LN3]), torch.tensor([-LN3, LN3, 0.0, LN3]), torch.tensor([1.0, 1.0, 0.5, 0.5])
    got = pairpm_losses(d_ab, d_ba, p)
    assert got.tolist() == pytest.approx([0.287682, 1.039721, 0.693147, 0.836988], abs=1e-6)
    assert got.tolist() == pytest.approx([*STRICT_BY_HAND, *TIES_BY_HAND], abs=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 2.0])
def test_both_normalizations_against_values_worked_by_hand(lam):
    d_ab, d_ba, p = torch.tensor([LN3, 0.0, 0.0, LN3]), torch.tensor([-LN3, LN3, 0.0, LN3]), torch.tensor([1.0, 1.0, 0.5, 0.5])
    # S = 2 strict pairs, T = 2 ties, N = 4; both orders of a pair count as one pair.
    # "pairs": (log(4/3) + 3/2 log 2 + lam * (log 2 + 1/2 log(16/3))) / 4 = (1.327403 + lam * 1.530135) / 4
    pairs = (math.log(4 / 3) + 1.5 * math.log(2) + lam * (math.log(2) + 0.5 * math.log(16 / 3))) / 4
    # "per_kind": (log(4/3) + 3/2 log 2) / 2 + lam * (log 2 + 1/2 log(16/3)) / 2 = 0.663701 + lam * 0.765068
    per_kind = (math.log(4 / 3) + 1.5 * math.log(2)) / 2 + lam * (math.log(2) + 0.5 * math.log(16 / 3)) / 2
    assert per_kind == pytest.approx(0.663701 + lam * 0.765068, abs=1e-6)
    assert pairpm_loss(d_ab, d_ba, p, tie_weight=lam).item() == pytest.approx(pairs, abs=1e-6)
    assert pairpm_loss(d_ab, d_ba, p, tie_weight=lam, normalization="pairs").item() == pytest.approx(pairs, abs=1e-6)
    assert pairpm_loss(d_ab, d_ba, p, tie_weight=lam, normalization="per_kind").item() == pytest.approx(per_kind, abs=1e-6)
    # With as many ties as strict pairs, the mean over all pairs is half the sum of the two means (as for BT).
    assert pairs == pytest.approx(per_kind / 2)


def test_per_kind_weighs_ties_by_lambda_whatever_their_share():
    # One strict pair at (1, -1): ln(1 + e^-1) = 0.313262 in both orders. Three ties: (0, 0) gives log 2; (ln 3, ln 3)
    # and (ln 3, -ln 3) give 1/2 log(16/3) each (the tie loss is even in d). Ties sum to log 2 + log(16/3) = 2.367124.
    d_ab, d_ba, p = torch.tensor([1.0, 0.0, LN3, LN3]), torch.tensor([-1.0, 0.0, LN3, -LN3]), torch.tensor([1.0, 0.5, 0.5, 0.5])
    strict, ties = math.log1p(math.exp(-1.0)), math.log(2) + math.log(16 / 3)
    assert strict == pytest.approx(0.313262, abs=1e-6) and ties == pytest.approx(2.367124, abs=1e-6)
    for lam in (0.5, 1.0, 3.0):
        per_kind = pairpm_loss(d_ab, d_ba, p, tie_weight=lam, normalization="per_kind")
        assert per_kind.item() == pytest.approx(strict + lam * ties / 3, abs=1e-6)
        assert pairpm_loss(d_ab, d_ba, p, tie_weight=lam).item() == pytest.approx((strict + lam * ties) / 4, abs=1e-6)


@pytest.mark.parametrize("normalization", ["pairs", "per_kind"])
def test_a_batch_of_one_kind_is_that_kind_alone_and_never_divides_by_zero(normalization):
    # No ties: both readings are the mean over the strict pairs, (log(4/3) + 3/2 log 2) / 2 = 0.663701, whatever lambda.
    d_ab = torch.tensor([LN3, 0.0], requires_grad=True)
    loss = pairpm_loss(d_ab, torch.tensor([-LN3, LN3]), torch.tensor([1.0, 1.0]), tie_weight=2.0, normalization=normalization)
    assert loss.item() == pytest.approx(0.663701, abs=1e-6)
    loss.backward()
    assert torch.isfinite(d_ab.grad).all() and (d_ab.grad < 0).all()  # raise d_ab on both strict pairs
    # Only ties: lambda times their mean, lambda * (log 2 + 1/2 log(16/3)) / 2 = lambda * 0.765068; the absent strict
    # term adds 0 (not 0/0), so lambda = 0 gives exactly 0 and no gradient.
    for lam, expected in ((1.0, 0.765068), (2.0, 1.530135), (0.0, 0.0)):
        d_ab = torch.tensor([0.0, LN3], requires_grad=True)
        loss = pairpm_loss(d_ab, torch.tensor([0.0, LN3]), torch.tensor([0.5, 0.5]), tie_weight=lam, normalization=normalization)
        assert loss.item() == pytest.approx(expected, abs=1e-6)
        loss.backward()
        assert torch.isfinite(d_ab.grad).all()
        assert d_ab.grad[0].item() == pytest.approx(0.0, abs=1e-7)  # a tie at d = 0 is at its minimum
        assert (d_ab.grad[1].item() > 0) == (lam > 0)  # a tie at d = ln 3 is pulled back towards 0


def test_a_position_consistent_pairpm_has_the_bt_loss_of_its_logit():
    # d_ba = -d_ab: both orders say the same, and the pair loss is BT's at margin d_ab, under either normalization.
    from crome.train.loss import crome_loss

    d, p = torch.tensor([LN3, 0.0, 0.7, -1.2, 2.0]), torch.tensor([1.0, 1.0, 0.5, 0.5, 0.5])
    for normalization in ("pairs", "per_kind"):
        expected = crome_loss(d, torch.zeros(5), p, tie_weight=0.3, normalization=normalization).item()
        assert pairpm_loss(d, -d, p, tie_weight=0.3, normalization=normalization).item() == pytest.approx(expected, abs=1e-6)


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="per_kind"):
        pairpm_loss(torch.zeros(1), torch.zeros(1), torch.tensor([1.0]), normalization="orders")


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
