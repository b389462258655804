"""The Crome objective on a pairwise logit, over both orders of each pair.

d_ab is the model's logit of P(chosen > rejected) with the chosen answer in slot A, d_ba the logit
with it in slot B. The targets are p for ab and 1 - p for ba (a strict pair: 1 then 0; a tie: 0.5
both times), and each order gets the composite loss of crome.train.loss:

    loss_i^ab = -[p log sigmoid(d_ab) + (1 - p) log sigmoid(-d_ab)]
    loss_i^ba = -[(1 - p) log sigmoid(d_ba) + p log sigmoid(-d_ba)]

A pair's loss is the mean of its two orders, loss_i = 1/2 (loss_i^ab + loss_i^ba): both orders of a
pair count together, as one pair. A strict pair gives 1/2 [-log sigmoid(d_ab) - log sigmoid(-d_ba)],
Bradley-Terry in both orders; a tie gives the tie loss in both orders, log 2 when d_ab = d_ba = 0.

How a batch of S strict pairs and T ties (N = S + T) is reduced, `normalization` (as for
Bradley-Terry, by `crome.train.loss.reduce_pair_losses`; the unit is the pair, both orders together):

- "pairs" (the default): the mean over all pairs, ties weighted by lambda (`tie_weight`):

      loss = (sum_strict loss_i + lambda * sum_ties loss_i) / N
           = (S/N) * mean_strict + lambda * (T/N) * mean_ties

  which is also the mean over all 2N ordered inputs, ties weighted by lambda; the tie term's weight
  in the gradient grows with the share of ties in the data.
- "per_kind": the paper's two expectations added, each a mean over its own kind:

      loss = mean_strict + lambda * mean_ties

  (each the mean over the 2S, or 2T, ordered inputs of its kind), so lambda alone sets the balance,
  whatever the share of ties. A batch without ties (or without strict pairs) contributes only the
  term it has: the missing kind adds 0, never 0/0. Both orders of a pair are in the same forward
  pass, so they are never split between micro-batches; with gradient accumulation or several
  devices the means are per micro-batch, as for Bradley-Terry.
"""

from __future__ import annotations

import torch

from crome.train.loss import pair_losses, reduce_pair_losses


def pairpm_losses(d_ab: torch.Tensor, d_ba: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Per-pair loss, the mean of the two orders' losses (unweighted)."""
    p = preference.to(d_ab.dtype)
    return 0.5 * (pair_losses(d_ab, p) + pair_losses(d_ba, 1.0 - p))


def pairpm_loss(d_ab: torch.Tensor, d_ba: torch.Tensor, preference: torch.Tensor, *, tie_weight: float = 1.0,
                normalization: str = "pairs") -> torch.Tensor:  # fmt: skip
    """The batch loss over pairs, each pair both orders together (see the module docstring for `normalization`)."""
    losses = pairpm_losses(d_ab, d_ba, preference)
    return reduce_pair_losses(losses, preference, tie_weight=tie_weight, normalization=normalization)


def order_averaged_probability(d_ab: torch.Tensor, d_ba: torch.Tensor) -> torch.Tensor:
    """P(first answer of ab > second), averaged over both orders: (sigmoid(d_ab) + 1 - sigmoid(d_ba)) / 2."""
    return 0.5 * (torch.sigmoid(d_ab) + 1.0 - torch.sigmoid(d_ba))
