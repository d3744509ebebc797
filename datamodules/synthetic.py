"""Synthetic data sets of the theory papers, generated from a seed into tensors."""

from __future__ import annotations

import math
import re
from typing import Literal, Optional

import numpy as np
import torch

from datamodules.tensor import Split, TensorDataModule
from lightning_modules.nets.mlp import Activation, TwoLayerMLP


def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected argument `{name}` to be a positive integer but got {value!r}")


def _generator(seed: int, stream: int) -> torch.Generator:
    """A generator for one named use of ``seed`` (support, direction, embedding), independent of
    the data stream that :meth:`TensorDataModule.build` draws from ``seed`` itself."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))


class GaussianMixture(TensorDataModule):
    """Isotropic Gaussian clusters x = μ_c + σ ε, ε ~ N(0, I_d), with equal cluster weights.

    Cluster means are orthonormal when ``n_clusters ≤ dim`` (random unit vectors otherwise).
    With ``xor=False`` cluster c has class c. With ``xor=True`` the clusters come in antipodal
    pairs ±μ_p sharing the label p mod 2: the XOR mixture that no linear classifier separates
    and two-layer nets learn (Refinetti et al., 2021). Classes are indices 0..num_classes-1.

    Args:
        dim: input dimension d.
        n_clusters: number of clusters (an even number ≥ 4 when ``xor``).
        cluster_std: σ, the per-coordinate standard deviation around each unit-norm mean.
        xor: antipodal pairs with alternating binary labels.

    Raises:
        ValueError: on non-positive sizes, ``cluster_std`` < 0, or an odd/too small ``n_clusters`` with ``xor``.
    """

    classification = True

    def __init__(
        self,
        dim: int = 32,
        n_clusters: int = 4,
        cluster_std: float = 0.3,
        xor: bool = True,
        n_train: int = 1024,
        n_test: int = 1024,
        batch_size: Optional[int] = None,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(n_train, n_test, batch_size, seed, label_noise, eval_batch_size)
        _positive_int("dim", dim)
        _positive_int("n_clusters", n_clusters)
        if cluster_std < 0:
            raise ValueError(f"Expected argument `cluster_std` to be >= 0 but got {cluster_std!r}")
        if xor and (n_clusters < 4 or n_clusters % 2):
            raise ValueError(f"Expected argument `n_clusters` to be an even number >= 4 with xor=True but got {n_clusters!r}")
        if not xor and n_clusters < 2:
            raise ValueError(f"Expected argument `n_clusters` to be >= 2 but got {n_clusters!r}")
        self.dim, self.n_clusters, self.cluster_std, self.xor = dim, n_clusters, cluster_std, xor

    @property
    def num_classes(self) -> int:
        return 2 if self.xor else self.n_clusters

    @property
    def input_dim(self) -> int:
        return self.dim

    def cluster_means(self, generator: torch.Generator) -> torch.Tensor:
        """(n_clusters, d) unit-norm means; with ``xor`` rows 2p and 2p+1 are ±μ_p."""
        n_dirs = self.n_clusters // 2 if self.xor else self.n_clusters
        dirs = torch.randn(self.dim, n_dirs, generator=generator)
        if n_dirs <= self.dim:
            dirs = torch.linalg.qr(dirs).Q
        dirs = (dirs / dirs.norm(dim=0)).T  # (n_dirs, d)
        if self.xor:
            return torch.stack([dirs, -dirs], dim=1).reshape(self.n_clusters, self.dim)
        return dirs

    def cluster_labels(self) -> torch.Tensor:
        c = torch.arange(self.n_clusters)
        return (c // 2) % 2 if self.xor else c

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        means, labels = self.cluster_means(generator), self.cluster_labels()

        def draw(n: int) -> Split:
            cluster = torch.randint(self.n_clusters, (n,), generator=generator)
            x = means[cluster] + self.cluster_std * torch.randn(n, self.dim, generator=generator)
            return Split(x, labels[cluster])

        return draw(self.n_train), draw(self.n_test)


class TeacherStudent(TensorDataModule):
    """Regression on a random two-layer teacher: y = f*(x) + ξ, x ~ N(0, I_d), ξ ~ N(0, noise_std²).

    The teacher is a :class:`TwoLayerMLP` in the NTK parameterization without biases,
    f*(x) = (1/√m*) Σ_j a_j σ(w_j·x/√d), with w_j, a_j ~ N(0, 1) drawn from ``seed``; it is
    exposed as ``teacher`` for the recovery diagnostics. A linear teacher with
    ``output_dim ≥ teacher_width`` gives a rank-``teacher_width`` matrix target.

    Args:
        dim: input dimension d.
        teacher_width: m*, the teacher's hidden neurons.
        activation: σ of the teacher.
        output_dim: number of outputs.
        noise_std: standard deviation of the label noise ξ (train and test).

    Raises:
        ValueError: on non-positive sizes or a negative ``noise_std``.
    """

    def __init__(
        self,
        dim: int = 16,
        teacher_width: int = 4,
        activation: Activation = "relu",
        output_dim: int = 1,
        noise_std: float = 0.0,
        n_train: int = 1024,
        n_test: int = 1024,
        batch_size: Optional[int] = None,
        seed: int = 0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(n_train, n_test, batch_size, seed, 0.0, eval_batch_size)
        _positive_int("dim", dim)
        _positive_int("teacher_width", teacher_width)
        _positive_int("output_dim", output_dim)
        if noise_std < 0:
            raise ValueError(f"Expected argument `noise_std` to be >= 0 but got {noise_std!r}")
        self.dim, self.teacher_width, self.noise_std, self._output_dim = dim, teacher_width, noise_std, output_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.teacher = TwoLayerMLP(dim, teacher_width, output_dim, activation, bias=False, parameterization="ntk")
        self.teacher.requires_grad_(False)

    @property
    def input_dim(self) -> int:
        return self.dim

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        def draw(n: int) -> Split:
            x = torch.randn(n, self.dim, generator=generator)
            with torch.no_grad():
                y = self.teacher(x)
            return Split(x, y + self.noise_std * torch.randn(y.shape, generator=generator))

        return draw(self.n_train), draw(self.n_test)
