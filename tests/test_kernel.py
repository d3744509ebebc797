"""Empirical NTK against explicit per-sample Jacobians J Jᵀ (float64), alignment against its formula,
and the one Trainer run of the diagnostics: identical weights with and without every callback."""

import itertools

import pytest
import torch
from quiet_trainer import quiet_trainer

from callbacks.kernel import KernelDrift, empirical_ntk, has_closed_form, jacobian_ntk, jacobian_plan, kernel_alignment, two_layer_ntk
from callbacks.memory import JacobianPlan, parse_bytes, plan_jacobian_gram
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import ACTIVATIONS, TwoLayerMLP
from tests.diag_cases import CASES, per_sample_jacobian_ntk

pytestmark = pytest.mark.usefixtures("one_thread")


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """‖a − b‖_F ≤ rtol ‖b‖_F (stated tolerance: 1e-5 relative in Frobenius norm)."""
    return bool(torch.linalg.norm(a - b) <= rtol * torch.linalg.norm(b))


@pytest.mark.parametrize("parameterization", ["standard", "ntk", "mean_field"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_closed_form_equals_jacobians(parameterization, activation):
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64)
    for bias, frozen in itertools.product((True, False), (None, "fc1", "fc2")):
        net = TwoLayerMLP(
            3,
            5,
            2,
            activation,
            bias=bias,
            parameterization=parameterization,
            train_first_layer=frozen != "fc1",
            train_second_layer=frozen != "fc2",
        ).double()
        with torch.no_grad():  # non-zero biases so their terms matter
            for layer in (net.fc1, net.fc2):
                if layer.bias is not None:
                    layer.bias.normal_()
        assert has_closed_form(net)
        reference = per_sample_jacobian_ntk(net, x)
        assert close(two_layer_ntk(net, x), reference), (bias, frozen)
        assert close(jacobian_ntk(net, x), reference), (bias, frozen)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_generic_path_equals_jacobians_and_chunks_agree(name):
    net, _, x, _ = CASES[name]()
    net.train()
    reference = per_sample_jacobian_ntk(net, x)  # eval mode: BatchNorm running statistics
    whole = empirical_ntk(net, x)
    assert close(whole, reference)
    assert close(empirical_ntk(net, x, chunk_size=3), whole, rtol=1e-12)  # uneven chunks 3+3+3+1
    assert net.training


def test_alignment_matches_formula_and_is_label_coding_invariant():
    torch.manual_seed(0)
    n = 9
    feats = torch.randn(n, 4, dtype=torch.float64)
    kernel = feats @ feats.T
    labels = torch.randint(0, 3, (n,))
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    onehot = torch.nn.functional.one_hot(labels).double()
    kc, yc = h @ kernel @ h, h @ onehot @ onehot.T @ h
    expected = float((kc * yc).sum() / (torch.linalg.norm(kc) * torch.linalg.norm(yc)))
    assert kernel_alignment(kernel, labels) == pytest.approx(expected, rel=1e-12)
    binary = labels % 2
    signs = (2.0 * binary - 1.0).double()
    assert kernel_alignment(kernel, binary) == pytest.approx(kernel_alignment(kernel, signs), rel=1e-12)
    assert kernel_alignment(3.0 * kernel + 5.0, binary) == pytest.approx(kernel_alignment(kernel, binary), rel=1e-12)
    assert kernel_alignment(kernel, torch.zeros(n, dtype=torch.long)) != kernel_alignment(kernel, torch.zeros(n, dtype=torch.long))  # nan


def test_drift_is_zero_at_init_and_grows_with_training():
    torch.manual_seed(0)
    net = TwoLayerMLP(4, 16, 1, "relu").double()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    drift = KernelDrift(probe_size=None)
    first = drift.measure(net, x, y)
    assert first["kernel/drift"] == 0.0 and first["weights/rel_change/fc1.weight"] == 0.0
    assert "weights/rel_change/fc1.bias" not in first  # zero at init: no relative change
    assert first["kernel/lambda_min"] > 0
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        (0.5 * (net(x) - y).pow(2).mean()).backward()
        opt.step()
    later = drift.measure(net, x, y)
    assert later["kernel/drift"] > 1e-3 and later["weights/rel_change/fc2.weight"] > 0
    assert set(later) == set(first) and later["diag/kernel_seconds"] >= 0
    restored = KernelDrift()
    restored.load_state_dict(drift.state_dict())
    assert restored.measure(net, x, y)["kernel/drift"] == later["kernel/drift"]


@pytest.mark.parametrize("kwargs, match", [({"chunk_size": 0}, "chunk_size"), ({"probe_size": 1.5}, "probe_size"), ({"seed": "a"}, "seed")])
def test_callback_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KernelDrift(**kwargs)


def test_callbacks_do_not_change_training(tmp_path):
    """Same seed with and without every diagnostic callback gives bit-identical final weights."""
    import pytorch_lightning as pl

    from callbacks.alignment import FeedbackAlignment
    from callbacks.sharpness import HessianSharpness
    from callbacks.teacher import TeacherRecovery
    from datamodules.synthetic import GaussianMixture
    from lightning_modules.module import SupervisedModule

    def run(callbacks: list) -> tuple[dict, dict, torch.Tensor]:
        pl.seed_everything(0, verbose=False)
        data = GaussianMixture(dim=4, n_train=64, n_test=32, batch_size=16, seed=0)
        data.teacher = TwoLayerMLP(4, 3, 1, bias=False)  # lets TeacherRecovery run on this data
        model = SupervisedModule(TwoLayerMLP(4, 16, 1, "tanh"), lr=0.2, momentum=0.9, seed=0)
        trainer = quiet_trainer(max_epochs=3, callbacks=callbacks, num_sanity_val_steps=2, default_root_dir=tmp_path)
        trainer.fit(model, datamodule=data)
        return model.state_dict(), dict(trainer.callback_metrics), torch.get_rng_state()

    callbacks = [
        HessianSharpness(probe_size=32, k=2, trace=True),
        KernelDrift(probe_size=16),
        TeacherRecovery(),
        FeedbackAlignment(probe_size=16),
    ]
    alignment_tags = ("alignment/weight_vs_feedback_deg", "diag/alignment_seconds")
    plain, _, plain_rng = run([])
    watched, logged, watched_rng = run(callbacks)
    assert torch.equal(plain_rng, watched_rng)  # no diagnostic consumed the global RNG
    assert plain.keys() == watched.keys()
    assert all(torch.equal(plain[k], watched[k]) for k in plain)
    for tag in (
        "sharpness/lambda_max",
        "sharpness/two_over_lr",
        "sharpness/trace",
        "kernel/drift",
        "kernel/lambda_min",
        "kernel/alignment",
        "weights/rel_change/fc1.weight",
        "teacher/min_max_cosine",
        "diag/sharpness_seconds",
        "diag/kernel_seconds",
        "diag/teacher_seconds",
        *alignment_tags,
    ):
        assert tag in logged, tag
    assert float(logged["kernel/drift"]) > 0
    assert float(logged["sharpness/two_over_lr"]) == pytest.approx(10.0)


def test_lambda_min_of_the_output_summed_kernel_bounds_k_times_that_of_the_full_gram():
    # The documented relation for k outputs: K = Σ_c G_cc, so λ_min(K) ≥ k λ_min(G), G the (nk, nk) Gram.
    torch.manual_seed(0)
    net, x = TwoLayerMLP(3, 5, 3, "tanh").double(), torch.randn(6, 3, dtype=torch.float64)
    params = list(net.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(net(x[i : i + 1])[0, c], params)]) for c in range(3) for i in range(6)]
    jac = torch.stack(rows)  # (nk, P), output-major
    gram = jac @ jac.T
    kernel = empirical_ntk(net, x)
    assert torch.allclose(kernel, sum(gram[6 * c : 6 * c + 6, 6 * c : 6 * c + 6] for c in range(3)), rtol=1e-10, atol=1e-12)
    lam_k, lam_g = torch.linalg.eigvalsh(kernel)[0], torch.linalg.eigvalsh(gram)[0]
    assert lam_g > 1e-6 and lam_k >= 3 * lam_g * (1 - 1e-9)


# ---- memory budget ------------------------------------------------------------------------------
def count_forwards(net: torch.nn.Module) -> list[int]:
    calls = [0]
    net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name", ["cnn", "resnet"])
@pytest.mark.parametrize("regime", ["output_groups", "recompute"])
def test_over_budget_chunks_and_gives_the_unchunked_kernel(name, regime):
    net, _, x, _ = CASES[name]()  # float64, 10 samples, 3 outputs
    whole = jacobian_plan(net, x, memory_budget="1GiB")
    assert (whole.chunk_size, whole.outputs_per_pass, whole.n_passes) == (10, 3, 1)  # everything at once
    smallest = jacobian_plan(net, x[:1], memory_budget="1GiB")
    # Budgets of two plans: all samples' Jacobians of two outputs (not three); two kept samples of one output.
    s1, a = whole.row_bytes, whole.activation_bytes
    full = JacobianPlan(10, 3, s1, a, 8, 10, 3, 1).peak_bytes
    budget = (
        JacobianPlan(10, 3, s1, a, 8, 10, 2, 1).peak_bytes
        if regime == "output_groups"
        else JacobianPlan(10, 3, s1, a, 8, 1, 1, 2).peak_bytes
    )
    plan = jacobian_plan(net, x, memory_budget=budget)
    assert plan.peak_bytes <= budget < full
    if regime == "output_groups":  # outputs (0, 1), then (2,): each sample's Jacobian computed once
        assert (plan.chunk_size, plan.outputs_per_pass, plan.n_passes) == (10, 2, 2)
    else:  # one sample and one output per pass, 2 kept while the later ones stream past: 3 × (10 + 8 + 6 + 4 + 2) passes
        assert (plan.chunk_size, plan.outputs_per_pass, plan.kept_chunks, plan.n_passes) == (1, 1, 2, 90)
    assert smallest.activation_bytes == whole.activation_bytes > 0
    calls = count_forwards(net)
    kernel = jacobian_ntk(net, x, memory_budget=budget)
    assert calls[0] == plan.n_passes + 2  # one vmap(jacrev) forward per pass, plus the plan's two one-sample forwards
    assert close(kernel, empirical_ntk(net, x), rtol=1e-12)
    assert close(kernel, per_sample_jacobian_ntk(net, x))


def test_budget_too_small_for_one_sample_says_so_in_one_line():
    net, _, x, _ = CASES["cnn"]()
    need = JacobianPlan(10, 3, jacobian_plan(net, x).row_bytes, jacobian_plan(net, x).activation_bytes, 8, 1, 1, 1).peak_bytes
    with pytest.raises(
        ConfigError, match=rf"Expected argument `memory_budget` to be at least {need} bytes .* but got {need - 1} bytes"
    ) as info:
        jacobian_ntk(net, x, memory_budget=need - 1)
    assert "\n" not in str(info.value)
    assert close(jacobian_ntk(net, x, memory_budget=need), empirical_ntk(net, x), rtol=1e-12)  # exactly enough: one sample at a time
    drift = KernelDrift(probe_size=None, memory_budget=need - 1)
    with pytest.raises(ConfigError, match="memory_budget"):
        drift.measure(net, x, torch.zeros(10, dtype=torch.long))


def model_peak(plan: JacobianPlan) -> int:
    """The documented model, written out again: kernel + a block of it + the buffer of kept rows + one pass."""
    n, c, g, r, s, s1, a = (
        plan.n,
        plan.chunk_size,
        plan.outputs_per_pass,
        plan.kept_chunks,
        plan.itemsize,
        plan.row_bytes,
        plan.activation_bytes,
    )
    kept = min(n, r * c)
    return n * n * s + kept * kept * s + kept * g * s1 + c * (2 * g * s1 + 2 * a)


@pytest.mark.parametrize(
    "n, k, n_params, activation_bytes",
    [(1, 1, 50, 0), (7, 3, 177, 1000), (256, 10, 269_722, 1_520_000), (1000, 10, 269_722, 1_520_000), (300, 1, 10**6, 10**5)],
)
def test_derived_chunks_respect_the_budget(n, k, n_params, activation_bytes):
    s = 4
    need = JacobianPlan(n, k, n_params * s, activation_bytes, s, 1, 1, 1).peak_bytes
    for budget in sorted({need, need + 1, 2 * need, 10 * need, 10**8, 10**9, 2**30, 4 * 2**30} - set(range(need))):
        plan = plan_jacobian_gram(n, k, n_params, s, activation_bytes, budget)
        assert model_peak(plan) == plan.peak_bytes <= budget, (budget, plan)
        assert 1 <= plan.chunk_size <= n and 1 <= plan.outputs_per_pass <= k and plan.kept_chunks >= 1
        everything = JacobianPlan(n, k, n_params * s, activation_bytes, s, n, k, 1)
        if everything.peak_bytes <= budget:
            assert plan == everything  # one pass when all fits
    resnet = plan_jacobian_gram(256, 10, 269_722, 4, 1_520_000, "1GiB")  # ResNet-20, 256 CIFAR probes (float32)
    assert resnet.outputs_per_pass == 3 and resnet.kept_chunks == resnet.n_chunks and resnet.peak_bytes <= 2**30
    explicit = plan_jacobian_gram(256, 10, 269_722, 4, 1_520_000, "1GiB", chunk_size=100)
    assert explicit.chunk_size == 100  # an explicit chunk size wins


@pytest.mark.parametrize(
    "value, expected", [("1GiB", 2**30), ("512 MiB", 2**29), ("2GB", 2 * 10**9), ("1.5kb", 1500), ("123", 123), (4096, 4096)]
)
def test_memory_budget_accepts_bytes_and_units(value, expected):
    assert parse_bytes("memory_budget", value) == expected
    assert KernelDrift(memory_budget=value).memory_budget == value


@pytest.mark.parametrize("value", ["1 potato", "GiB", "-1GiB", 0, 1.5, True, None])
def test_memory_budget_rejects_other_values(value):
    with pytest.raises(ConfigError, match="Expected argument `memory_budget` to be a positive number of bytes"):
        KernelDrift(memory_budget=value)
