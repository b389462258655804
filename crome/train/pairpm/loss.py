"""The Crome objective on a pairwise logit, over both orders of each pair.

d_ab is the model's logit of P(chosen > rejected) with the chosen answer in slot A, d_ba the logit
with it in slot B. The targets are p for ab and 1 - p for ba (a strict pair: 1 then 0; a tie: 0.5
both times), and each order gets the composite loss of crome.train.loss:

    loss_i = -[t log sigmoid(d) + (1 - t) log sigmoid(-d)]

The batch loss is the mean over all 2B ordered inputs of w * loss, w = tie_weight (lambda) on ties.
"""

from __future__ import annotations

import torch

from crome.train.loss import is_tie, pair_losses


def pairpm_losses(d_ab: torch.Tensor, d_ba: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Per-pair loss, the mean of the two orders' losses (unweighted)."""
    p = preference.to(d_ab.dtype)
    return 0.5 * (pair_losses(d_ab, p) + pair_losses(d_ba, 1.0 - p))


def pairpm_loss(d_ab: torch.Tensor, d_ba: torch.Tensor, preference: torch.Tensor, *, tie_weight: float = 1.0) -> torch.Tensor:
    """Mean over both orders of every pair of the weighted composite loss."""
    weights = torch.where(is_tie(preference), torch.full_like(d_ab, tie_weight), torch.ones_like(d_ab))
    return (weights * pairpm_losses(d_ab, d_ba, preference)).mean()


def order_averaged_probability(d_ab: torch.Tensor, d_ba: torch.Tensor) -> torch.Tensor:
    """P(first answer of ab > second), averaged over both orders: (sigmoid(d_ab) + 1 - sigmoid(d_ba)) / 2."""
    return 0.5 * (torch.sigmoid(d_ab) + 1.0 - torch.sigmoid(d_ba))
