"""gaussian_mixture_three_clusters: the three-cluster data and the symmetric-door neuron against closed forms,
and the CI twin's predicted direction (not exact numbers)."""

import math

import numpy as np
import pytest
import torch
from experiment_runner import run_config, scalars

from datamodules.synthetic import GaussianMixture
from lightning_modules import losses
from lightning_modules.checks import ConfigError
from lightning_modules.nets.door import SymmetricDoor

pytestmark = pytest.mark.usefixtures("one_thread")

CI = "configs/ci/gaussian_mixture_three_clusters.yaml"


def phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def three_clusters(n_train: int = 12000, n_test: int = 12000, dim: int = 16, sigma: float = 0.3, seed: int = 0) -> GaussianMixture:
    data = GaussianMixture(
        dim=dim, n_clusters=3, three_clusters=True, xor=False, cluster_std=sigma, n_train=n_train, n_test=n_test, seed=seed
    )
    data.prepare_splits()
    return data


def test_three_clusters_means_labels_balance_and_spread():
    """Means 0, −μ, +μ with |μ| = 1; class 0 at the origin, class 1 at ±μ; P(class 1) = 2/3; σ² per coordinate."""
    data, sigma, dim = three_clusters(), 0.3, 16
    means = data.cluster_means(torch.Generator().manual_seed(0))  # the stream build() starts with
    mu = means[2]
    assert means.shape == (3, dim) and data.num_classes == 2 and data.output_dim == 1
    assert torch.equal(means[0], torch.zeros(dim)) and torch.equal(means[1], -mu)
    assert mu.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert data.cluster_labels().tolist() == [0, 1, 1]
    x, y = data.train.x, data.train.y
    n = len(y)
    assert abs(y.float().mean().item() - 2 / 3) < 4 * math.sqrt(2 / 9 / n)
    proj = x @ mu
    outer = y == 1
    plus, minus = outer & (proj > 0), outer & (proj < 0)  # the ±μ clusters (overlap Φ(−1/σ) ≈ 4e-4)
    for members, centre in ((~outer, torch.zeros(dim)), (plus, mu), (minus, -mu)):
        k = int(members.sum())
        assert abs(k / n - 1 / 3) < 4 * math.sqrt(2 / 9 / n)
        assert (x[members].mean(0) - centre).norm().item() < 4 * sigma * math.sqrt(dim / k)
        noise = x[members] - centre
        assert noise.var(0).mean().item() == pytest.approx(sigma**2, rel=0.03)


def test_other_layouts_keep_their_means():
    """The three_clusters option leaves the orthonormal and XOR layouts as they were: the same means as a direct
    QR of the same Gaussian draw."""
    for xor, k in ((False, 3), (True, 4)):
        data = GaussianMixture(dim=8, n_clusters=k, xor=xor)
        n_dirs = k // 2 if xor else k
        dirs = torch.linalg.qr(torch.randn(8, n_dirs, generator=torch.Generator().manual_seed(5))).Q
        dirs = (dirs / dirs.norm(dim=0)).T
        expected = torch.stack([dirs, -dirs], dim=1).reshape(k, 8) if xor else dirs
        assert torch.equal(data.cluster_means(torch.Generator().manual_seed(5)), expected)
    with pytest.raises(ConfigError, match="n_clusters=3"):
        GaussianMixture(n_clusters=4, xor=False, three_clusters=True)
    with pytest.raises(ConfigError, match="n_clusters=3"):
        GaussianMixture(n_clusters=4, xor=True, three_clusters=True)


def test_the_door_on_mu_reaches_its_closed_form_accuracy_and_no_linear_classifier_beats_two_thirds():
    """The oracle door |μ·x| > 1/2 is right with probability [(2Φ(a) − 1) + 2(Φ(a) + Φ(−3a))]/3, a = 1/(2σ);
    a linear classifier with a bias separates at most two of the three clusters (accuracy ≤ 2/3 + small)."""
    sigma = 0.3
    data = three_clusters(sigma=sigma)
    mu = data.cluster_means(torch.Generator().manual_seed(0))[2]
    a = 0.5 / sigma
    closed = ((2 * phi(a) - 1) + 2 * (phi(a) + phi(-3 * a))) / 3
    door = SymmetricDoor(16, kappa=0.25)
    with torch.no_grad():
        door.weight.copy_(mu)
    acc = losses.correct(door(data.test.x), data.test.y).mean().item()
    assert acc == pytest.approx(closed, abs=4 * math.sqrt(closed * (1 - closed) / len(data.test.y)))
    linear = torch.nn.Linear(16, 1)  # logistic regression with a bias, fitted to convergence
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = losses.mean_loss("logistic", linear(data.train.x), data.train.y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        assert losses.correct(linear(data.test.x), data.test.y).mean().item() < 0.70


def test_symmetric_door_matches_its_closed_form_output_gradient_and_init():
    torch.manual_seed(0)
    net = SymmetricDoor(12, kappa=0.7, init_scale=2.0).double()
    x, y = torch.randn(9, 12, dtype=torch.float64), torch.randint(2, (9,))
    h = x @ net.weight.detach()
    assert torch.allclose(net(x)[:, 0], h**2 - 0.7)
    loss = losses.mean_loss("logistic", net(x), y)
    (grad,) = torch.autograd.grad(loss, net.weight)
    t = 2.0 * y.double() - 1.0
    # ∂/∂w mean log(1 + e^(−t f)) = mean[−t σ(−t f) · 2h x]
    expected = (-t * torch.sigmoid(-t * (h**2 - 0.7)) * 2 * h)[:, None].mul(x).mean(0)
    assert torch.allclose(grad, expected)
    assert torch.equal(losses.correct(net(x), y), ((h.abs() > math.sqrt(0.7)).long() == y).double())
    big = SymmetricDoor(40000, init_scale=2.0)
    assert big.weight.pow(2).sum().item() == pytest.approx(4.0, rel=0.03)  # E‖w‖² = init_scale²
    with pytest.raises(ConfigError, match="output_dim"):
        SymmetricDoor(4, output_dim=2)
    with pytest.raises(ConfigError, match="kappa"):
        SymmetricDoor(4, kappa=0.0)


def test_ci_twin_interpolates_and_its_test_error_grows_after_an_early_minimum(tmp_path):
    """The seed's "interpolating regimes and a large generalization gap": SGD fits (nearly) every training
    point, while the test error, near the Bayes error 0.017 early in training, ends several times higher.
    Over seeds 0–3: train acc 0.996–1, test error at the end 0.062–0.076, its minimum 0.018–0.022
    (ratio 3.0–3.8)."""
    root = tmp_path / "ci"
    metrics = run_config(CI, root)["metrics"]
    steps, acc = np.array(scalars(root, "test/acc")).T
    err = 1.0 - acc
    assert metrics["train/acc"] >= 0.99
    assert err.min() < 0.035
    assert steps[err.argmin()] < steps[-1] / 2  # the minimum comes early
    assert err[-1] > 2.0 * err.min()
    assert metrics["gap/acc"] > 0.03


def test_smaller_batches_end_with_a_higher_test_error_at_the_same_lr_and_sgf_time(tmp_path):
    """Batch size as a control parameter, lr 0.3 and η·steps = 96 for both: B = 4 against full batch (B = 256).
    The noisier run ends with the higher test error; over seeds 0–3 by 0.004, 0.010, 0.013 and 0.008
    (0.069–0.085 against 0.061–0.072). The paper's regularizing effect of SGD noise does not show here."""
    runs = {
        "noisy": ["--data.batch_size", "4", "--trainer.max_epochs", "5", "--trainer.val_check_interval", "16"],
        "quiet": ["--data.batch_size", "256", "--trainer.max_epochs", "320", "--trainer.check_val_every_n_epoch", "10"],
    }
    test_error = {}
    for name, args in runs.items():
        metrics = run_config(CI, tmp_path / name, "--model.lr", "0.3", *args)["metrics"]
        assert metrics["train/acc"] >= 0.99
        test_error[name] = 1.0 - metrics["test/acc"]
    assert test_error["noisy"] > test_error["quiet"]
