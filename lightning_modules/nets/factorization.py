"""Deep linear low-rank factorization f(x) = W_L ⋯ W_2 W_1 x with inner dimension r.

W_1 ∈ R^(r×d), W_2..W_{L−1} ∈ R^(r×r), W_L ∈ R^(k×r): the end-to-end matrix W_L ⋯ W_1 has rank
≤ r. Fitting Y = X Mᵀ reaches zero loss when r ≥ rank(M) and stalls at the best rank-r loss
(Eckart–Young) otherwise; feedback alignment on this problem: Lillicrap et al. 2016, and the
fa_matrix_factorization experiment. Layers are bias-free nn.Linear, so learning rules convert them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_modules.checks import check_int, check_positive, check_sizes


class LowRankFactorization(nn.Module):
    """f(x) = W_L ⋯ W_1 x with every inner dimension r (see the module docstring).

    Args:
        input_dim: d.
        output_dim: k.
        rank: r, the inner dimension.
        depth: L >= 2, the number of factors.
        init_scale: W_l ~ N(0, init_scale² / fan_in); small values give the small-init regime.

    Raises:
        ConfigError: on sizes that are no positive integers, depth < 2 or init_scale <= 0.
    """

    def __init__(self, input_dim: int, output_dim: int = 1, rank: int = 1, depth: int = 2, init_scale: float = 1.0) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, output_dim=output_dim, rank=rank)
        check_int("depth", depth, minimum=2)
        check_positive("init_scale", init_scale)
        self.input_dim, self.output_dim, self.rank, self.depth, self.init_scale = input_dim, output_dim, rank, depth, init_scale
        dims = [input_dim] + [rank] * (depth - 1) + [output_dim]
        self.factors = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W_l ~ N(0, init_scale² / fan_in)."""
        for layer in self.factors:
            layer.weight.normal_(0.0, self.init_scale / math.sqrt(layer.in_features))

    def end_to_end(self) -> torch.Tensor:
        """The product W_L ⋯ W_1, shape (k, d)."""
        product = self.factors[0].weight
        for layer in self.factors[1:]:
            product = layer.weight @ product
        return product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (n, d)
        for layer in self.factors:
            h = layer(h)  # (n, r), ..., (n, k)
        return h

    def extra_repr(self) -> str:
        return f"rank={self.rank}, depth={self.depth}, init_scale={self.init_scale}"
