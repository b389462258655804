"""The Crome objective: Bradley-Terry on strict pairs plus a tie loss on neutral pairs, in one formula.

With d = r(chosen) - r(rejected) and p the row's preference (1.0 strict, 0.5 tie):

    loss_i = -[p log sigmoid(d) + (1 - p) log sigmoid(-d)]

A strict pair gives -log sigmoid(d), the Bradley-Terry loss; a tie gives
-1/2 [log sigmoid(d) + log sigmoid(-d)], which is log 2 at d = 0 and grows with |d|.

How a batch of S strict pairs and T ties (N = S + T) is reduced, `normalization`:

- "pairs" (the default): the mean over all pairs, ties weighted by lambda (`tie_weight`):

      loss = (sum_strict loss_i + lambda * sum_ties loss_i) / N
           = (S/N) * mean_strict + lambda * (T/N) * mean_ties

  so each tie counts as much as a strict pair (times lambda), and the tie term's weight in the
  gradient grows with the share of ties in the data. This is the reading the builds and the
  benchmarks use.
- "per_kind": the paper's two expectations added, each a mean over its own kind:

      loss = mean_strict + lambda * mean_ties

  so lambda alone sets the balance, whatever the share of ties; a batch without ties (or without
  strict pairs) contributes only the term it has. With gradient accumulation or several devices
  the means are per micro-batch, as every other term of the loss.

`reduce_pair_losses` is this reduction; PairPM (crome.train.pairpm.loss) reduces its pairs with it too,
each pair's loss there being the mean of its two orders.

The paper (Srivastava et al., arXiv 2506.16507) writes the objective as a Bradley-Terry term plus
lambda times a tie term without saying how each is normalised. The two readings differ by the share
of each kind: with half the rows ties, "pairs" is exactly half of "per_kind" (the same direction,
half the step); with few ties, "pairs" all but drops the tie term and "per_kind" does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TIE = 0.5


def is_tie(preference: torch.Tensor) -> torch.Tensor:
    """Tie mask; tolerant of float32 round trips of 0.5."""
    return (preference - TIE).abs() < 1e-6


def pair_losses(margins: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Per-pair loss -[p log sigmoid(d) + (1 - p) log sigmoid(-d)], unweighted."""
    return -(preference * F.logsigmoid(margins) + (1.0 - preference) * F.logsigmoid(-margins))


NORMALIZATIONS = ("pairs", "per_kind")


def reduce_pair_losses(losses: torch.Tensor, preference: torch.Tensor, *, tie_weight: float = 1.0,
                       normalization: str = "pairs") -> torch.Tensor:  # fmt: skip
    """A batch's loss from its per-pair losses, reduced as `normalization` says (see the module docstring).

    Shared by Bradley-Terry (`crome_loss`) and PairPM (crome.train.pairpm.loss), so both read the flag the same way.
    """
    tie = is_tie(preference)
    if normalization == "pairs":
        weights = torch.where(tie, torch.full_like(losses, tie_weight), torch.ones_like(losses))
        return (weights * losses).mean()
    if normalization == "per_kind":
        strict = ~tie
        # A kind absent from the batch adds nothing (a mean over no pairs would be 0/0).
        strict_mean = (losses * strict).sum() / strict.sum().clamp(min=1)
        tie_mean = (losses * tie).sum() / tie.sum().clamp(min=1)
        return strict_mean + tie_weight * tie_mean
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")


def crome_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    preference: torch.Tensor,
    *,
    tie_weight: float = 1.0,
    center_rewards: float | None = None,
    normalization: str = "pairs",
) -> torch.Tensor:
    """The batch loss (see the module docstring for `normalization`), plus the optional reward-centering term."""
    margins = chosen_rewards - rejected_rewards
    losses = pair_losses(margins, preference.to(margins.dtype))
    loss = reduce_pair_losses(losses, preference, tie_weight=tie_weight, normalization=normalization)
    if center_rewards:
        # Eisenstein et al. 2023 (as TRL's center_rewards_coefficient): keeps each pair's rewards near zero so
        # the scale of r is identifiable; the pairwise loss only sees differences.
        loss = loss + center_rewards * ((chosen_rewards + rejected_rewards) ** 2).mean()
    return loss
