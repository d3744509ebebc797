"""Synthetic data sets: labels against their definitions, seeding, validation, label noise, and
one end-to-end check that a two-layer MLP learns (20, 3)-sparse parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.synthetic import GaussianMixture, LowDimManifold, OneDimensional, SingleIndex, SparseParity, hermite
from lightning_modules.losses import correct, mean_loss
from lightning_modules.nets.mlp import TwoLayerMLP

ALL = {
    "parity": lambda seed: SparseParity(n=12, k=3, n_train=64, n_test=32, seed=seed),
    "single_index": lambda seed: SingleIndex(d=8, link="hermite_2", noise=0.1, n_train=64, n_test=32, seed=seed),
    "one_dim_uniform": lambda seed: OneDimensional(target="abs", sampling="uniform", n_train=64, n_test=32, seed=seed),
    "manifold": lambda seed: LowDimManifold(d0=3, d=10, n_train=64, n_test=32, seed=seed),
    "manifold_sign": lambda seed: LowDimManifold(d0=3, d=10, target="sign", manifold="subspace", n_train=64, n_test=32, seed=seed),
}


def splits(dm):
    dm.prepare_splits()
    return dm.train, dm.test


# ---- definitions ---------------------------------------------------------------------------------
def test_parity_labels_are_the_product_of_the_hidden_coordinates():
    dm = SparseParity(n=20, k=3, n_train=500, n_test=200, seed=3)
    assert dm.support.tolist() == sorted(set(dm.support.tolist())) and len(dm.support) == 3
    for split in splits(dm):
        assert set(split.x.unique().tolist()) == {-1.0, 1.0} and split.y.dtype == torch.long
        chi = torch.ones(len(split))
        for i in dm.support.tolist():
            chi = chi * split.x[:, i]
        assert torch.equal(2 * split.y - 1, chi.long())
        # A hidden coordinate alone is uncorrelated with the label.
        assert abs((split.x[:, dm.support[0]] * chi).mean()) < 0.2
    assert dm.output_dim == 1 and dm.num_classes == 2 and dm.input_dim == 20


def test_hermite_matches_numpy_and_is_orthonormal_under_the_gaussian():
    z, w = np.polynomial.hermite_e.hermegauss(20)  # exact for polynomials of degree < 40
    w = w / w.sum()
    values = np.stack([hermite(torch.tensor(z, dtype=torch.float64), k).numpy() for k in range(6)])
    for k in range(6):
        coef = np.zeros(k + 1)
        coef[k] = 1 / math.sqrt(math.factorial(k))
        np.testing.assert_allclose(values[k], np.polynomial.hermite_e.hermeval(z, coef), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose((values * w) @ values.T, np.eye(6), atol=1e-10)


@pytest.mark.parametrize(
    "link, g", [("relu", torch.relu), ("tanh", torch.tanh), ("sign", torch.sign), ("hermite_3", lambda z: (z**3 - 3 * z) / math.sqrt(6))]
)
def test_single_index_targets(link, g):
    dm = SingleIndex(d=16, link=link, n_train=300, n_test=100, seed=1)
    assert torch.allclose(dm.w_star.norm(), torch.tensor(1.0))
    for split in splits(dm):
        assert split.y.shape == (len(split), 1)
        torch.testing.assert_close(split.y[:, 0], g(split.x @ dm.w_star), rtol=1e-5, atol=1e-5)
    noisy = SingleIndex(d=16, link=link, noise=0.5, n_train=4000, n_test=10, seed=1)
    train, _ = splits(noisy)
    assert abs((train.y[:, 0] - g(train.x @ noisy.w_star)).std() - 0.5) < 0.03


def test_one_dimensional_grid_and_targets():
    dm = OneDimensional(a=-2.0, b=3.0, target="relu_sum", sampling="grid", n_train=11, n_test=101)
    train, test = splits(dm)
    torch.testing.assert_close(train.x[:, 0], torch.linspace(-2.0, 3.0, 11))
    torch.testing.assert_close(test.x[:, 0], torch.linspace(-2.0, 3.0, 101))
    hat = torch.clamp(0.5 - test.x.abs(), min=0.0)  # relu(x+½) − 2 relu(x) + relu(x−½) is a hat of height ½
    torch.testing.assert_close(test.y, hat)
    x = splits(OneDimensional(a=0.5, b=0.75, target="step", sampling="uniform", n_train=200))[0].x
    assert x.min() >= 0.5 and x.max() <= 0.75 and len(x.unique()) == 200


@pytest.mark.parametrize("manifold", ["sphere", "subspace"])
def test_low_dim_manifold_lies_in_the_embedded_subspace(manifold):
    dm = LowDimManifold(d0=3, d=12, manifold=manifold, n_train=400, n_test=50, seed=2)
    U = dm.embedding
    torch.testing.assert_close(U.T @ U, torch.eye(3), atol=1e-5, rtol=0)
    train, _ = splits(dm)
    z = train.x @ U  # (n, d0) intrinsic coordinates
    torch.testing.assert_close(z @ U.T, train.x, atol=1e-5, rtol=0)
    if manifold == "sphere":
        torch.testing.assert_close(train.x.norm(dim=1), torch.full((400,), math.sqrt(3.0)))
    torch.testing.assert_close(train.y, dm.teacher(z), atol=1e-5, rtol=1e-5)
    sign = LowDimManifold(d0=3, d=12, manifold=manifold, target="sign", n_train=2000, n_test=50, seed=2)
    train, _ = splits(sign)
    assert sign.classification and sign.output_dim == 1
    assert torch.equal(train.y, (sign.teacher(train.x @ sign.embedding)[:, 0] > 0).long())
    assert 0.4 < train.y.float().mean() < 0.6  # tanh teacher: odd, so balanced


# ---- seeds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ALL))
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = (splits(ALL[name](seed)) for seed in (5, 5, 6))
    for sa, sb, sc in zip(a, b, c):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
    assert not torch.equal(a[0].x, c[0].x)


def test_hidden_structure_depends_on_the_seed():
    assert len({tuple(SparseParity(n=50, k=5, seed=s).support.tolist()) for s in range(5)}) == 5
    assert not torch.equal(SingleIndex(seed=0).w_star, SingleIndex(seed=1).w_star)
    assert not torch.equal(LowDimManifold(seed=0).embedding, LowDimManifold(seed=1).embedding)


# ---- validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SparseParity(n=20, k=30), r"^Expected argument `k` to be <= n = 20 but got 30$"),
        (lambda: SparseParity(n=20, k=0), r"^Expected argument `k` to be a positive integer but got 0$"),
        (lambda: SparseParity(n=0, k=1), r"`n` to be a positive integer but got 0"),
        (lambda: SingleIndex(link="cubic"), r"`link` to be one of relu, tanh, sign, hermite_<k> .* but got 'cubic'"),
        (lambda: SingleIndex(link="hermite_0"), r"`link` .* but got 'hermite_0'"),
        (lambda: SingleIndex(noise=-1.0), r"`noise` to be a finite number >= 0 but got -1.0"),
        (lambda: OneDimensional(a=1.0, b=0.0), r"`b` to be > a = 1.0 but got 0.0"),
        (lambda: OneDimensional(target="cos"), r"`target` to be one of sin, abs, step, relu_sum but got 'cos'"),
        (lambda: OneDimensional(sampling="sobol"), r"`sampling` to be one of grid, uniform but got 'sobol'"),
        (lambda: LowDimManifold(d0=20, d=10), r"^Expected argument `d0` to be <= d = 10 but got 20$"),
        (lambda: LowDimManifold(manifold="torus"), r"`manifold` to be one of subspace, sphere but got 'torus'"),
        (lambda: LowDimManifold(target="median"), r"`target` to be one of teacher, sign but got 'median'"),
        (lambda: LowDimManifold(target="teacher", label_noise=0.1), r"`label_noise` to be 0 for the regression data LowDimManifold"),
        (lambda: SingleIndex(n_train=0), r"`n_train` to be a positive integer but got 0"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- label noise (base class) ------------------------------------------------------------------------
CLASSIFIERS = {
    "parity": lambda noise: SparseParity(n=10, k=2, n_train=301, n_test=100, seed=4, label_noise=noise),
    "mixture": lambda noise: GaussianMixture(dim=8, n_clusters=6, xor=False, n_train=301, n_test=100, seed=4, label_noise=noise),
    "mixture_xor": lambda noise: GaussianMixture(dim=8, n_train=301, n_test=100, seed=4, label_noise=noise),
    "manifold_sign": lambda noise: LowDimManifold(target="sign", n_train=301, n_test=100, seed=4, label_noise=noise),
}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
@pytest.mark.parametrize("noise", [0.1, 0.5, 1.0])
def test_label_noise_corrupts_an_exact_fraction_of_train_labels_only(name, noise):
    clean, noisy = CLASSIFIERS[name](0.0), CLASSIFIERS[name](noise)
    (ctrain, ctest), (ntrain, ntest) = splits(clean), splits(noisy)
    bad = noisy.corrupted_indices
    assert len(bad) == round(noise * 301) == len(bad.unique())
    changed = (ctrain.y != ntrain.y).nonzero()[:, 0]
    assert torch.equal(changed, bad)  # every listed label changed, no other
    assert ntrain.y.min() >= 0 and ntrain.y.max() < noisy.num_classes
    assert torch.equal(ctrain.x, ntrain.x)
    assert torch.equal(ctest.x, ntest.x) and torch.equal(ctest.y, ntest.y)


# ---- end to end ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_layer_mlp_learns_sparse_parity(seed):
    """(20, 3)-parity, 2048 samples, width 128, SGD lr 0.5, batch 64, hinge: 12 epochs (384 steps)
    reach 100% test accuracy on seeds 0..9 (measured); the bar is 90%."""
    torch.manual_seed(seed)
    dm = SparseParity(n=20, k=3, n_train=2048, n_test=1024, batch_size=64, seed=seed)
    net = TwoLayerMLP(dm.input_dim, 128, dm.output_dim, "relu", parameterization="standard")
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    batches = dm.train_dataloader()  # shuffled index slices of the train tensors
    for epoch in range(12):
        batches.sampler.set_epoch(epoch)
        for x, y in batches:
            opt.zero_grad()
            mean_loss("hinge", net(x), y).backward()
            opt.step()
    with torch.no_grad():
        assert correct(net(dm.test.x), dm.test.y).mean() > 0.9
