"""``MemberMean``: a weighted mean per member, as a torchmetrics Metric (so DDP reduces it by declaration)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MemberMean(Metric):
    """The weighted mean of each member's values over an epoch: Σ wᵢ vᵢₖ / Σ wᵢ for member k.

    ``torchmetrics.MeanMetric`` averages everything into one number; here every member keeps its
    own. The sums are float64 and summed across processes, so under DDP the result is the mean over
    all the points of every process.

    >>> metric = MemberMean(num_members=2)
    >>> metric.update(torch.tensor([1.0, 10.0]), weight=3)
    >>> metric.update(torch.tensor([[2.0, 20.0]]), weight=torch.tensor([1.0]))
    >>> metric.compute()
    tensor([ 1.2500, 12.5000], dtype=torch.float64)
    """

    full_state_update = False

    def __init__(self, num_members: int) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(num_members, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        """``values``: (K,) for one observation or (N, K) for N of them; ``weight``: a number or (N,)."""
        values = values.detach().double().reshape(-1, self.total.numel())
        weight = torch.as_tensor(weight, dtype=torch.float64, device=self.total.device).expand(len(values))
        self.total += weight @ values
        self.weight += weight.sum()

    def compute(self) -> torch.Tensor:
        return self.total / self.weight
