"""Synthetic data sets of the theory papers, generated from a seed into tensors."""

from __future__ import annotations

import math
import re
from typing import Literal, Optional

import numpy as np
import torch

from datamodules.tensor import FreshBatches, Split, TensorDataModule
from lightning_modules.checks import ConfigError, check_bool, check_choice, check_int, check_number, check_positive_int
from lightning_modules.nets.mlp import Activation, TwoLayerMLP


def _generator(seed: int, stream: int) -> torch.Generator:
    """A generator for one named use of ``seed`` (support, direction, embedding), independent of
    the data stream that :meth:`TensorDataModule.build` draws from ``seed`` itself."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed % 2**64, stream]).generate_state(1)[0]))


class GaussianMixture(TensorDataModule):
    """Isotropic Gaussian clusters x = μ_c + σ ε, ε ~ N(0, I_d), with equal cluster weights.

    Cluster means are orthonormal when ``n_clusters ≤ dim`` (random unit vectors otherwise).
    With ``xor=False`` cluster c has class c. With ``xor=True`` the clusters come in antipodal
    pairs ±μ_p sharing the label p mod 2: the XOR mixture that no linear classifier separates
    and two-layer nets learn (Refinetti et al., 2021). Classes are indices 0..num_classes-1.

    With ``three_clusters=True`` (and ``n_clusters=3``, ``xor=False``) the means are 0, −μ and +μ for one
    random unit vector μ: cluster 0 at the origin has class 0, the clusters ±μ share class 1, so
    P(class 1) = 2/3. This is the non-convex three-cluster mixture of Mignacco et al. (2020): no linear
    classifier separates it; a single neuron with the symmetric door output sign(|w·x| − √κ) can
    (lightning_modules/nets/door.py).

    Args:
        dim: input dimension d.
        n_clusters: number of clusters (an even number ≥ 4 when ``xor``).
        cluster_std: σ, the per-coordinate standard deviation around each unit-norm mean.
        xor: antipodal pairs with alternating binary labels.
        three_clusters: the clusters 0 (class 0) and ±μ (class 1); needs ``n_clusters=3`` and ``xor=False``.

    Raises:
        ConfigError: on sizes that are no positive integers, ``cluster_std`` < 0, an odd/too small ``n_clusters`` with ``xor``,
            or ``three_clusters`` with ``xor`` or ``n_clusters`` ≠ 3.
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
        three_clusters: bool = False,
    ) -> None:
        super().__init__(
            n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, label_noise=label_noise, eval_batch_size=eval_batch_size
        )
        check_positive_int("dim", dim)
        check_bool("xor", xor)
        check_bool("three_clusters", three_clusters)
        if three_clusters and (xor or n_clusters != 3):
            raise ConfigError(f"Expected `n_clusters=3` and `xor=False` with three_clusters but got {n_clusters!r}, {xor!r}")
        check_int("n_clusters", n_clusters, minimum=2)
        check_number("cluster_std", cluster_std, 0.0)
        if xor and (n_clusters < 4 or n_clusters % 2):
            raise ConfigError(f"Expected argument `n_clusters` to be an even number >= 4 with xor=True but got {n_clusters!r}")
        self.dim, self.n_clusters, self.cluster_std, self.xor = dim, n_clusters, cluster_std, xor
        self.three_clusters = three_clusters

    @property
    def num_classes(self) -> int:
        return 2 if self.xor or self.three_clusters else self.n_clusters

    @property
    def input_dim(self) -> int:
        return self.dim

    def cluster_means(self, generator: torch.Generator) -> torch.Tensor:
        """(n_clusters, d) unit-norm means; with ``xor`` rows 2p and 2p+1 are ±μ_p; with ``three_clusters`` the rows 0, −μ, +μ."""
        n_dirs = 1 if self.three_clusters else self.n_clusters // 2 if self.xor else self.n_clusters
        dirs = torch.randn(self.dim, n_dirs, generator=generator)
        if n_dirs <= self.dim:
            dirs = torch.linalg.qr(dirs).Q
        dirs = (dirs / dirs.norm(dim=0)).T  # (n_dirs, d)
        if self.xor:
            return torch.stack([dirs, -dirs], dim=1).reshape(self.n_clusters, self.dim)
        if self.three_clusters:
            return torch.cat([torch.zeros_like(dirs), -dirs, dirs])  # (3, d)
        return dirs

    def cluster_labels(self) -> torch.Tensor:
        c = torch.arange(self.n_clusters)
        if self.three_clusters:
            return (c > 0).long()  # the origin class 0, ±μ class 1
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
    f*(x) = (1/√m*) Σ_j a_j σ(w_j·x/√d), with w_j ~ N(0, I_d) and a_j = ±1 (random signs, so every
    teacher neuron carries the same weight in f* and can be recovered) drawn from ``seed``; it is
    exposed as ``teacher`` for the recovery diagnostics. A linear teacher with
    ``output_dim ≥ teacher_width`` gives a rank-``teacher_width`` matrix target.

    With ``teacher_bias=True`` the same teacher (same w_j, a_j) gets hidden biases,
    f*(x) = (1/√m*) Σ_j a_j σ(w_j·x/√d + b_j) with b_j ~ N(0, 1) independent of everything else (the
    scale of w_j·x/√d, so a ReLU neuron is active on a fraction Φ(b_j/(‖w_j‖/√d)) of the inputs), and
    an output bias of 0; a student then needs ``bias: true`` to match its neurons (callbacks/teacher.py
    compares the augmented vectors (w_j/√d, b_j)). The default leaves the teacher and the data
    unchanged bit for bit.

    Args:
        dim: input dimension d.
        teacher_width: m*, the teacher's hidden neurons.
        activation: σ of the teacher.
        output_dim: number of outputs.
        noise_std: standard deviation of the label noise ξ (train and test).
        teacher_bias: give the teacher's hidden neurons biases b_j ~ N(0, 1).

    Raises:
        ConfigError: on sizes that are no positive integers, a negative ``noise_std`` or a ``teacher_bias`` that is no boolean.
    """

    def __init__(
        self,
        dim: int = 16,
        teacher_width: int = 4,
        activation: Activation = "relu",
        output_dim: int = 1,
        noise_std: float = 0.0,
        teacher_bias: bool = False,
        n_train: int = 1024,
        n_test: int = 1024,
        batch_size: Optional[int] = None,
        seed: int = 0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, eval_batch_size=eval_batch_size)
        check_positive_int("dim", dim)
        check_positive_int("teacher_width", teacher_width)
        check_positive_int("output_dim", output_dim)
        check_number("noise_std", noise_std, 0.0)
        check_bool("teacher_bias", teacher_bias)
        self.dim, self.teacher_width, self.noise_std, self._output_dim = dim, teacher_width, noise_std, output_dim
        self.teacher_bias = teacher_bias
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.teacher = TwoLayerMLP(dim, teacher_width, output_dim, activation, bias=False, parameterization="ntk")
            with torch.no_grad():
                self.teacher.fc2.weight.sign_()
            if teacher_bias:  # the same w_j, a_j; biases from a stream of their own
                biased = TwoLayerMLP(dim, teacher_width, output_dim, activation, bias=True, parameterization="ntk")
                with torch.no_grad():
                    biased.fc1.weight.copy_(self.teacher.fc1.weight)
                    biased.fc2.weight.copy_(self.teacher.fc2.weight)
                    biased.fc1.bias.copy_(torch.randn(teacher_width, generator=_generator(seed, 5)))  # (m*,) b_j ~ N(0, 1)
                    biased.fc2.bias.zero_()
                self.teacher = biased
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


class RandomLabels(TensorDataModule):
    """Memorization task: x ~ N(0, I_d) and labels drawn independently of x.

    ``labels="gaussian"``: y ~ N(0, I_k) with k = ``output_dim`` (regression, shape (n, k));
    ``labels="classes"``: y ∈ {0, 1} uniform (binary classification; ±1 for the hinge and
    logistic losses, one output). The test set is drawn the same way, so no net beats chance
    (test loss ≥ the label variance, accuracy ½ on average): only the training fit is informative.
    This is the setting of the memorization results in the NT regime (λ_min of the kernel on n
    points bounded away from zero once width × d ≫ n; Montanari & Zhong, 2020; Bubeck et al., 2020).

    Args:
        dim: input dimension d.
        labels: ``gaussian`` or ``classes``.
        output_dim: k, the number of Gaussian targets (must be 1 with ``labels="classes"``).

    Raises:
        ConfigError: on sizes that are no positive integers, an unknown ``labels``, or output_dim ≠ 1 with classes.
    """

    num_classes = 2  # when labels="classes"

    def __init__(
        self,
        dim: int = 16,
        labels: Literal["gaussian", "classes"] = "gaussian",
        output_dim: int = 1,
        n_train: int = 128,
        n_test: int = 128,
        batch_size: Optional[int] = None,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
    ) -> None:
        check_choice("labels", labels, ("gaussian", "classes"))
        self.classification = labels == "classes"  # before the base checks label_noise against it
        super().__init__(
            n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, label_noise=label_noise, eval_batch_size=eval_batch_size
        )
        check_positive_int("dim", dim)
        check_positive_int("output_dim", output_dim)
        if self.classification and output_dim != 1:
            raise ConfigError(f"Expected argument `output_dim` to be 1 with labels='classes' but got {output_dim!r}")
        self.dim, self.labels, self._output_dim = dim, labels, output_dim

    @property
    def input_dim(self) -> int:
        return self.dim

    @property
    def output_dim(self) -> int:
        return self._output_dim

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        def draw(n: int) -> Split:
            x = torch.randn(n, self.dim, generator=generator)  # (n, d)
            if self.classification:
                return Split(x, torch.randint(0, 2, (n,), generator=generator))  # (n,), independent of x
            return Split(x, torch.randn(n, self._output_dim, generator=generator))  # (n, k), independent of x

        return draw(self.n_train), draw(self.n_test)


class SparseParity(TensorDataModule):
    """(n, k)-sparse parity: x uniform on {±1}^n, label χ_S(x) = Π_{i∈S} x_i for a hidden S, |S| = k.

    S is drawn from ``seed`` and exposed as ``support`` (sorted coordinate indices). The label
    is stored as the class index y = (χ_S + 1)/2 ∈ {0, 1}, so a one-output net is trained on
    t = 2y − 1 = χ_S (hinge, mse, logistic, cross_entropy; see losses.py). SGD on two-layer nets
    learns it in n^O(k) steps after a long plateau (Barak et al., 2022, "Hidden progress in deep
    learning: SGD learns parities near the computational limit"; configs/experiments/sparse_parity_scaling.yaml
    measures the exponent).

    With ``online=True`` training is online SGD, the setting of that paper: every step draws a fresh
    minibatch (:class:`datamodules.tensor.FreshBatches`; batch i of epoch e from (seed, e, i), so a
    resumed run is exact). An epoch is still ``n_train / batch_size`` steps, n_train fresh samples; the
    stored train split of n_train samples then serves only the per-epoch ``train/*`` evaluation and the
    callbacks' probes (one more sample of the distribution, never trained on).

    Args:
        n: input dimension (number of bits).
        k: size of the hidden set S, 1 ≤ k ≤ n.
        online: a fresh minibatch every step instead of minibatches of the stored train split.

    Raises:
        ConfigError: on sizes that are no positive integers, k outside [1, n], or label noise with ``online``.
    """

    classification = True
    num_classes = 2

    def __init__(
        self,
        n: int = 20,
        k: int = 3,
        n_train: int = 2048,
        n_test: int = 1024,
        batch_size: Optional[int] = 64,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
        online: bool = False,
    ) -> None:
        super().__init__(
            n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, label_noise=label_noise, eval_batch_size=eval_batch_size
        )
        check_positive_int("n", n)
        check_positive_int("k", k)
        check_bool("online", online)
        if k > n:
            raise ConfigError(f"Expected argument `k` to be <= n = {n} but got {k!r}")
        if online and label_noise > 0:
            raise ConfigError(f"Expected argument `label_noise` to be 0 with online=True (fresh batches are clean) but got {label_noise!r}")
        self.n, self.k, self.online = n, k, online
        self.support = torch.randperm(n, generator=_generator(seed, 1))[:k].sort().values  # (k,)

    @property
    def input_dim(self) -> int:
        return self.n

    def parity(self, x: torch.Tensor) -> torch.Tensor:
        """χ_S(x) = Π_{i∈S} x_i ∈ {±1} for x (m, n) in {±1}^n."""
        return x[:, self.support].prod(dim=1)  # (m,)

    def sample(self, m: int, generator: torch.Generator) -> Split:
        """m fresh samples: x uniform on {±1}^n (m, n), class index (χ_S(x) + 1)/2 (m,)."""
        x = 2.0 * torch.randint(0, 2, (m, self.n), generator=generator).float() - 1.0  # (m, n)
        return Split(x, ((self.parity(x) + 1) / 2).long())

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        return self.sample(self.n_train, generator), self.sample(self.n_test, generator)

    def train_dataloader(self):
        """Minibatches of the stored train split (the base class), or with ``online`` fresh ones every step."""
        if not self.online:
            return super().train_dataloader()
        trainer = self.trainer
        progress = (lambda: trainer.fit_loop.epoch_loop.batch_progress.current.completed) if trainer is not None else None
        rank = trainer.global_rank if trainer is not None else 0
        return FreshBatches(self.sample, self.split_on_device("train"), self.batch_size, self.seed, rank, progress)

    def batch_order(self, split: str = "train", seed: Optional[int] = None, epoch: int = 0) -> list[Optional[torch.Tensor]]:
        """The base class's order of the stored split; none exists for ``online`` training batches.

        Raises:
            ConfigError: with ``online`` (e.g. the module's replicas, which replay another minibatch order).
        """
        if self.online and split == "train":
            raise ConfigError("Expected `data.online` to be False for a minibatch order (model.replicas > 1) but got True")
        return super().batch_order(split, seed, epoch)


LINKS = ("relu", "tanh", "sign", "hermite_<k>")


def hermite(z: torch.Tensor, k: int) -> torch.Tensor:
    """Normalized probabilists' Hermite polynomial He_k(z)/√(k!), orthonormal under z ~ N(0, 1).

    He_0 = 1, He_1 = z, He_{j+1} = z He_j − j He_{j−1}.

    >>> hermite(torch.tensor([2.0]), 3)  # He_3(2) = 2³ − 3·2 = 2, divided by √3! = √6
    tensor([0.8165])
    """
    prev, cur = torch.ones_like(z), z
    if k == 0:
        return prev
    for j in range(1, k):
        prev, cur = cur, z * cur - j * prev
    return cur / math.sqrt(math.factorial(k))


def link_function(link: str):
    """The map g of a link name; ``hermite_k`` is :func:`hermite` of degree k ≥ 1.

    Raises:
        ConfigError: on a name outside :data:`LINKS`.
    """
    named = {"relu": torch.relu, "tanh": torch.tanh, "sign": torch.sign}
    if link in named:
        return named[link]
    match = re.fullmatch(r"hermite_(\d+)", str(link))
    if match and int(match.group(1)) >= 1:
        return lambda z: hermite(z, int(match.group(1)))
    raise ConfigError(f"Expected argument `link` to be one of relu, tanh, sign, hermite_<k> (k >= 1, e.g. hermite_3) but got {link!r}")


class SingleIndex(TensorDataModule):
    """Single-index regression: y = g(⟨w*, x⟩) + ξ, x ~ N(0, I_d), ‖w*‖ = 1, ξ ~ N(0, noise²).

    w* is drawn uniformly on the sphere from ``seed`` and exposed as ``w_star`` (d,). With
    g = He_k/√(k!) the *information exponent* is k: online SGD needs about d^(k−1) samples to
    leave the equator ⟨w, w*⟩ ≈ 0 (Ben Arous, Gheissari & Jagannath, 2021; Bietti et al., 2022).
    Noise is added to train and test targets alike. Targets have shape (n, 1).

    Args:
        d: input dimension.
        link: g, one of relu, tanh, sign or hermite_k (k ≥ 1, e.g. ``hermite_3``).
        noise: standard deviation of ξ.

    Raises:
        ConfigError: on a size that is no positive integer, an unknown ``link`` or a negative ``noise``.
    """

    def __init__(
        self,
        d: int = 32,
        link: str = "relu",
        noise: float = 0.0,
        n_train: int = 1024,
        n_test: int = 1024,
        batch_size: Optional[int] = None,
        seed: int = 0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, eval_batch_size=eval_batch_size)
        check_positive_int("d", d)
        self.g = link_function(link)
        check_number("noise", noise, 0.0)
        self.d, self.link, self.noise = d, link, noise
        w = torch.randn(d, generator=_generator(seed, 2))
        self.w_star = w / w.norm()  # (d,), unit norm

    @property
    def input_dim(self) -> int:
        return self.d

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        def draw(m: int) -> Split:
            x = torch.randn(m, self.d, generator=generator)  # (m, d)
            y = self.g(x @ self.w_star)[:, None]  # (m, 1)
            return Split(x, y + self.noise * torch.randn(m, 1, generator=generator))

        return draw(self.n_train), draw(self.n_test)


TARGETS_1D = {
    "sin": lambda x: torch.sin(math.pi * x),
    "abs": torch.abs,
    "step": lambda x: (x > 0).to(x.dtype),
    "relu_sum": lambda x: torch.relu(x + 0.5) - 2.0 * torch.relu(x) + torch.relu(x - 0.5),
}


class OneDimensional(TensorDataModule):
    """Regression of a fixed function f on an interval [a, b] ⊂ R (inputs and targets (n, 1)).

    | target   | f(x)                                  | what it probes                        |
    |----------|---------------------------------------|---------------------------------------|
    | sin      | sin(πx)                               | smooth target, spectral bias           |
    | abs      | |x|                                   | one kink: exactly two ReLU units       |
    | step     | 1{x > 0}                              | a jump: not a finite-norm ReLU net     |
    | relu_sum | relu(x+½) − 2 relu(x) + relu(x−½)     | a hat: the minimal-norm linear spline  |

    Wide two-layer ReLU nets trained to interpolate in 1-D converge to the linear spline of
    least representational cost (Savarese et al., 2019; Williams et al., 2019). Training points
    are an equispaced grid (both ends included) or drawn uniformly from ``seed``; the test set
    is always the equispaced grid of ``n_test`` points, ready to plot the learned function.

    Args:
        a: left end of the interval.
        b: right end of the interval, b > a.
        target: a name from the table above.
        sampling: ``grid`` or ``uniform`` training inputs.

    Raises:
        ConfigError: on b ≤ a or an unknown ``target`` / ``sampling``.
    """

    def __init__(
        self,
        a: float = -1.0,
        b: float = 1.0,
        target: Literal["sin", "abs", "step", "relu_sum"] = "sin",
        sampling: Literal["grid", "uniform"] = "grid",
        n_train: int = 16,
        n_test: int = 512,
        batch_size: Optional[int] = None,
        seed: int = 0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, eval_batch_size=eval_batch_size)
        check_number("a", a)
        check_number("b", b)
        if not b > a:
            raise ConfigError(f"Expected argument `b` to be > a = {a!r} but got {b!r}")
        check_choice("target", target, TARGETS_1D)
        check_choice("sampling", sampling, ("grid", "uniform"))
        self.a, self.b, self.target, self.sampling = float(a), float(b), target, sampling

    @property
    def input_dim(self) -> int:
        return 1

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        f = TARGETS_1D[self.target]
        if self.sampling == "grid":
            x_train = torch.linspace(self.a, self.b, self.n_train)[:, None]  # (n_train, 1)
        else:
            x_train = self.a + (self.b - self.a) * torch.rand(self.n_train, 1, generator=generator)
        x_test = torch.linspace(self.a, self.b, self.n_test)[:, None]  # (n_test, 1)
        return Split(x_train, f(x_train)), Split(x_test, f(x_test))


class LowDimManifold(TensorDataModule):
    """Data on a d0-dimensional set embedded isometrically in R^d: x = U z, U ∈ R^(d×d0), UᵀU = I.

    Intrinsic coordinates z ∈ R^d0 are Gaussian, z ~ N(0, I_d0) (``manifold="subspace"``), or
    uniform on the sphere of radius √d0 (``manifold="sphere"``, a (d0−1)-manifold with the same
    E‖z‖² = d0). The target depends on z only, through a random two-layer teacher
    f*(z) = (1/√m*) Σ_j a_j σ(w_j·z/√d0) (a bias-free NTK :class:`TwoLayerMLP`, exposed as
    ``teacher``): ``target="teacher"`` regresses y = f*(z) (shape (n, 1)); ``target="sign"``
    classifies y = 1{f*(z) > 0} (an odd σ such as tanh gives balanced classes). Sample complexity
    then scales with d0, not d (Goldt et al., 2020, "Modeling the influence of data structure on
    learning in neural networks: the hidden manifold model"). U is exposed as ``embedding``.

    Args:
        d0: intrinsic dimension, 1 ≤ d0 ≤ d.
        d: ambient (input) dimension.
        manifold: ``subspace`` or ``sphere``.
        target: ``teacher`` (regression) or ``sign`` (binary classification).
        teacher_width: m*, the teacher's hidden neurons.
        activation: σ of the teacher.
        normal_noise_std: s, noise across the subspace on the training inputs only:
            x = U z + s (I − UUᵀ) ξ, ξ ~ N(0, I_d) from a stream of its own, so the targets, the test set
            (on the subspace) and, at s = 0, every tensor equal the noise-free data's (He, Tsai & Ward, 2022:
            noise in the codimension regularizes the learned function across the subspace).

    Raises:
        ConfigError: on a size that is no positive integer, d0 > d, an unknown choice, or a negative
            normal_noise_std.
    """

    num_classes = 2  # when target="sign"

    def __init__(
        self,
        d0: int = 4,
        d: int = 32,
        manifold: Literal["subspace", "sphere"] = "sphere",
        target: Literal["teacher", "sign"] = "teacher",
        teacher_width: int = 8,
        activation: Activation = "tanh",
        n_train: int = 1024,
        n_test: int = 1024,
        batch_size: Optional[int] = None,
        seed: int = 0,
        label_noise: float = 0.0,
        eval_batch_size: int = 8192,
        normal_noise_std: float = 0.0,
    ) -> None:
        check_choice("target", target, ("teacher", "sign"))
        check_number("normal_noise_std", normal_noise_std, 0.0)
        self.classification = target == "sign"  # before the base checks label_noise against it
        super().__init__(
            n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, label_noise=label_noise, eval_batch_size=eval_batch_size
        )
        check_positive_int("d0", d0)
        check_positive_int("d", d)
        check_positive_int("teacher_width", teacher_width)
        if d0 > d:
            raise ConfigError(f"Expected argument `d0` to be <= d = {d} but got {d0!r}")
        check_choice("manifold", manifold, ("subspace", "sphere"))
        self.d0, self.d, self.manifold, self.target = d0, d, manifold, target
        self.normal_noise_std = float(normal_noise_std)
        self.embedding = torch.linalg.qr(torch.randn(d, d0, generator=_generator(seed, 3))).Q  # (d, d0), UᵀU = I
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.teacher = TwoLayerMLP(d0, teacher_width, 1, activation, bias=False, parameterization="ntk")
        self.teacher.requires_grad_(False)

    @property
    def input_dim(self) -> int:
        return self.d

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        def draw(m: int) -> Split:
            z = torch.randn(m, self.d0, generator=generator)  # (m, d0)
            if self.manifold == "sphere":
                z = math.sqrt(self.d0) * z / z.norm(dim=1, keepdim=True)
            with torch.no_grad():
                f = self.teacher(z)  # (m, 1)
            y = (f[:, 0] > 0).long() if self.classification else f
            return Split(z @ self.embedding.T, y)  # x: (m, d)

        train, test = draw(self.n_train), draw(self.n_test)
        if self.normal_noise_std > 0:
            xi = torch.randn(self.n_train, self.d, generator=_generator(self.seed, 6))  # (n_train, d)
            normal = xi - (xi @ self.embedding) @ self.embedding.T  # (I − UUᵀ) ξ
            train = Split(train.x + self.normal_noise_std * normal, train.y)
        return train, test


class SignalNoisePatches(TensorDataModule):
    """Signal-noise patch data of benign overfitting: x = [ỹ·μ, ξ] ∈ R^(2d), two patches of d.

    Each sample draws a true label ỹ ∈ {±1} (Rademacher) and a noise patch
    ξ ~ N(0, σ_p² (I − μμᵀ/‖μ‖²)), orthogonal to the signal μ. The first patch is the signal ỹ·μ,
    the second the noise ξ (the papers say "one of the two patches"; the ShallowCNN pools over
    patches with shared filters, so the order does not matter to it). μ = ‖μ‖·u for a unit
    direction u drawn from ``seed`` and exposed as ``mu`` (d,). Labels are stored as class
    indices y = (ỹ + 1)/2; ``label_noise`` flips an exact fraction of the *train* labels while
    their signal patch keeps ỹ (the observed label disagrees with the signal, as in Kou et al.).
    Cao, Chen, Belkin & Gu (2022), "Benign overfitting in two-layer convolutional neural
    networks"; Kou, Chen, Chen & Gu (2023), "Benign overfitting for two-layer ReLU convolutional
    neural networks": trained to fit the noisy labels, the CNN still has small test error when
    n·‖μ‖⁴ ≳ σ_p⁴·d (ReLU; n·SNR^q ≳ 1 for ReLU^q in Cao et al.), and error near chance below.

    Args:
        dim: d, the size of each patch (inputs have 2d features).
        signal_norm: ‖μ‖ ≥ 0.
        noise_std: σ_p > 0, per-coordinate standard deviation of ξ (before the projection).

    Raises:
        ConfigError: on a size that is no positive integer, ``dim`` < 2, a negative ``signal_norm`` or a non-positive ``noise_std``.
    """

    classification = True
    num_classes = 2

    def __init__(
        self,
        dim: int = 1000,
        signal_norm: float = 4.0,
        noise_std: float = 1.0,
        n_train: int = 100,
        n_test: int = 1000,
        batch_size: Optional[int] = None,
        seed: int = 0,
        label_noise: float = 0.1,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(
            n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, label_noise=label_noise, eval_batch_size=eval_batch_size
        )
        check_int("dim", dim, minimum=2)
        check_number("signal_norm", signal_norm, 0.0)
        check_number("noise_std", noise_std, 0.0, strict_minimum=True)
        self.dim, self.signal_norm, self.noise_std = dim, float(signal_norm), float(noise_std)
        u = torch.randn(dim, generator=_generator(seed, 4), dtype=torch.float64)
        self._direction = u / u.norm()  # (d,), unit norm
        self.mu = (self.signal_norm * self._direction).float()  # (d,)

    @property
    def input_dim(self) -> int:
        return 2 * self.dim

    @property
    def snr(self) -> float:
        """SNR = ‖μ‖ / (σ_p √d), the ratio of the signal norm to the typical noise-patch norm."""
        return self.signal_norm / (self.noise_std * math.sqrt(self.dim))

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        u = self._direction

        def draw(n: int) -> Split:
            y = torch.randint(0, 2, (n,), generator=generator)  # (n,) class index; ỹ = 2y − 1
            g = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)  # (n, d)
            xi = self.noise_std * (g - (g @ u)[:, None] * u)  # (n, d), projected off μ
            signal = (2 * y - 1).to(torch.float64)[:, None] * self.signal_norm * u  # (n, d) = ỹ μ
            return Split(torch.cat([signal, xi], dim=1).float(), y)  # x: (n, 2d)

        return draw(self.n_train), draw(self.n_test)


class LinearGaussian(TensorDataModule):
    """Linear regression with a chosen covariance spectrum: y = β·x + ξ, x ~ N(0, Σ), ξ ~ N(0, σ²).

    Σ = diag(λ₁, …, λ_d) (``eigenvalues``, the coordinates are its eigenvectors), by ``spectrum``:

    - ``isotropic``: λ_i = 1;
    - ``spiked``: k = ``n_spikes`` spikes λ_i = ``spike`` (i ≤ k), then a flat tail λ_i = T/(d − k) of trace
      T = ``tail_trace``: its effective rank r_k(Σ) = Σ_{i>k} λ_i / λ_(k+1) is d − k, high when d ≫ n;
    - ``power_law``: the same k spikes, then a tail λ_(k+j) ∝ j^(−α), α = ``tail_decay`` ≥ 0, of trace T:
      α = 0 is the flat tail; α > 1 concentrates the tail on its first few directions (r_k ≈ ζ(α), low).

    The target β = ``beta_norm``·(1, …, 1, 0, …)/√k lies on the spikes (the first k coordinates), exposed as
    ``beta`` (d, 1). The excess risk of an estimate θ is E_x[(x·(θ − β))²] = Σ_i λ_i (θ_i − β_i)²
    (:func:`callbacks.risk.excess_risk`). Bartlett, Long, Lugosi & Tsigler 2020 ("Benign overfitting in linear
    regression"): the min-norm interpolator has small excess risk (benign overfitting) iff the tail of Σ
    after some k ≪ n has a high effective rank, r_k ≫ n (for the variance: R_k = (Σ_{i>k} λ_i)²/Σ_{i>k} λ_i²
    ≫ n); Tsigler & Bartlett 2023: there the tail acts on the spikes as a ridge of T/n (our λ units), and
    when that is more than the optimal regularization the best ridge λ is negative.

    Args:
        dim: d.
        spectrum: ``isotropic``, ``spiked`` or ``power_law``.
        n_spikes: k, the spikes (and the support of β); 1 ≤ k < d (k ≤ d for isotropic).
        spike: the spikes' eigenvalue (not used by ``isotropic``).
        tail_trace: T > 0, the trace of the tail (not used by ``isotropic``).
        tail_decay: α ≥ 0 of the ``power_law`` tail.
        beta_norm: ‖β‖.
        noise_std: σ, the label noise (train and test).

    Raises:
        ConfigError: on sizes that are no positive integers, an unknown spectrum, k outside [1, d) (or
            [1, d] for isotropic), or a spike, tail_trace, tail_decay, beta_norm or noise_std out of range.
    """

    def __init__(
        self,
        dim: int = 1000,
        spectrum: Literal["isotropic", "spiked", "power_law"] = "spiked",
        n_spikes: int = 5,
        spike: float = 1.0,
        tail_trace: float = 10.0,
        tail_decay: float = 0.0,
        beta_norm: float = 1.0,
        noise_std: float = 0.5,
        n_train: int = 100,
        n_test: int = 1000,
        batch_size: Optional[int] = None,
        seed: int = 0,
        eval_batch_size: int = 8192,
    ) -> None:
        super().__init__(n_train=n_train, n_test=n_test, batch_size=batch_size, seed=seed, eval_batch_size=eval_batch_size)
        check_positive_int("dim", dim)
        check_choice("spectrum", spectrum, ("isotropic", "spiked", "power_law"))
        check_int("n_spikes", n_spikes, minimum=1, maximum=dim if spectrum == "isotropic" else dim - 1)
        check_number("spike", spike, 0.0, strict_minimum=True)
        check_number("tail_trace", tail_trace, 0.0, strict_minimum=True)
        check_number("tail_decay", tail_decay, 0.0)
        check_number("beta_norm", beta_norm, 0.0)
        check_number("noise_std", noise_std, 0.0)
        self.dim, self.spectrum, self.n_spikes, self.spike = dim, spectrum, n_spikes, float(spike)
        self.tail_trace, self.tail_decay = float(tail_trace), float(tail_decay)
        self.beta_norm, self.noise_std = float(beta_norm), float(noise_std)
        self.eigenvalues = self.spectrum_of()  # (d,) float64, λ₁ ≥ … (spikes, then the tail)
        self.beta = torch.zeros(dim, 1, dtype=torch.float64)  # (d, 1)
        self.beta[:n_spikes] = self.beta_norm / math.sqrt(n_spikes)

    @property
    def input_dim(self) -> int:
        return self.dim

    def spectrum_of(self) -> torch.Tensor:
        """(λ₁, …, λ_d) of the class docstring, float64."""
        d, k = self.dim, self.n_spikes
        if self.spectrum == "isotropic":
            return torch.ones(d, dtype=torch.float64)
        decay = self.tail_decay if self.spectrum == "power_law" else 0.0
        tail = torch.arange(1, d - k + 1, dtype=torch.float64) ** -decay  # (d − k,) ∝ j^(−α)
        return torch.cat([torch.full((k,), self.spike, dtype=torch.float64), self.tail_trace * tail / tail.sum()])

    def effective_ranks(self, k: Optional[int] = None) -> tuple[float, float]:
        """Bartlett et al.'s effective ranks of the tail after the first k (default ``n_spikes``) eigenvalues:
        r_k = Σ_{i>k} λ_i / λ_(k+1) and R_k = (Σ_{i>k} λ_i)² / Σ_{i>k} λ_i² (both d − k for a flat tail)."""
        k = self.n_spikes if k is None else k
        check_int("k", k, minimum=0, maximum=self.dim - 1)
        tail = self.eigenvalues[k:]
        return float(tail.sum() / tail[0]), float(tail.sum() ** 2 / (tail**2).sum())

    def build(self, generator: torch.Generator) -> tuple[Split, Split]:
        scale = self.eigenvalues.sqrt()  # (d,)

        def draw(n: int) -> Split:
            x = torch.randn(n, self.dim, generator=generator, dtype=torch.float64) * scale  # (n, d) ~ N(0, Σ)
            y = x @ self.beta + self.noise_std * torch.randn(n, 1, generator=generator, dtype=torch.float64)  # (n, 1)
            return Split(x.float(), y.float())

        return draw(self.n_train), draw(self.n_test)
