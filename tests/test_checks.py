"""Argument checks: one module (lightning_modules/checks.py), one exception (ConfigError), one message
style, and booleans never taken for integers or numbers, in every class that takes user values."""

import math

import numpy as np
import pytest
import torch

from callbacks.diagnostic import Diagnostic
from callbacks.flatness import Flatness, perturbed_loss_increase
from callbacks.teacher import match_neurons
from datamodules.synthetic import (
    GaussianMixture,
    LowDimManifold,
    OneDimensional,
    SignalNoisePatches,
    SingleIndex,
    SparseParity,
    TeacherStudent,
    link_function,
)
from datamodules.tensor import TensorDataModule
from datamodules.vision import CIFAR10, MNIST, MNIST1D, stratified_indices
from lightning_modules import losses
from lightning_modules.checks import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_positive_int,
    check_probability,
    check_sizes,
)
from lightning_modules.ist import check_ist_net, ist_loss
from lightning_modules.learning_rules import apply_rule
from lightning_modules.module import SupervisedModule, param_groups
from lightning_modules.nets.cnn import ShallowCNN, SmallConvNet, image_shape
from lightning_modules.nets.factorization import LowRankFactorization
from lightning_modules.nets.mlp import TwoLayerMLP
from lightning_modules.nets.random_features import RandomFeatures
from lightning_modules.nets.resnet import ResidualMLP, ResNet
from lightning_modules.optimizers import SAM, EntropySGD, build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the helpers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_int("n", True), "Expected argument `n` to be an integer but got True"),
        (lambda: check_int("n", 2.0), "Expected argument `n` to be an integer but got 2.0"),
        (lambda: check_int("n", "3", minimum=0), "Expected argument `n` to be an integer >= 0 but got '3'"),
        (lambda: check_int("n", 6, maximum=5), "Expected argument `n` to be an integer <= 5 but got 6"),
        (lambda: check_int("n", 0, minimum=1, maximum=5), "Expected argument `n` to be an integer in [1, 5] but got 0"),
        (lambda: check_int("n", None, minimum=1), "Expected argument `n` to be a positive integer but got None"),
        (lambda: check_int("n", False, minimum=1, allow_none=True), "Expected argument `n` to be a positive integer or null but got False"),
        (lambda: check_positive_int("width", True), "Expected argument `width` to be a positive integer but got True"),
        (lambda: check_sizes(width=4, depth=0), "Expected argument `depth` to be a positive integer but got 0"),
        (lambda: check_number("lr", True, 0.0), "Expected argument `lr` to be a finite number >= 0 but got True"),
        (lambda: check_number("lr", math.inf, 0.0), "Expected argument `lr` to be a finite number >= 0 but got inf"),
        (lambda: check_number("lr", math.nan), "Expected argument `lr` to be a finite number but got nan"),
        (lambda: check_number("lr", "0.1"), "Expected argument `lr` to be a finite number but got '0.1'"),
        (
            lambda: check_number("beta", 1.0, 0.0, 1.0, strict_maximum=True),
            "Expected argument `beta` to be a finite number >= 0 and < 1 but got 1.0",
        ),
        (lambda: check_number("rho", 0, 0.0, strict_minimum=True), "Expected argument `rho` to be a finite number > 0 but got 0"),
        (lambda: check_number("x", 2.5, maximum=2), "Expected argument `x` to be a finite number <= 2 but got 2.5"),
        (lambda: check_number("s", -1.0, 0.0, allow_none=True), "Expected argument `s` to be a finite number >= 0 or null but got -1.0"),
        (lambda: check_positive("scale", 0.0), "Expected argument `scale` to be a finite number > 0 but got 0.0"),
        (lambda: check_probability("p", 1.5), "Expected argument `p` to be a probability in [0, 1] but got 1.5"),
        (lambda: check_probability("p", True), "Expected argument `p` to be a probability in [0, 1] but got True"),
        (lambda: check_probability("p", math.nan), "Expected argument `p` to be a probability in [0, 1] but got nan"),
        (lambda: check_probability("p", 1, allow_one=False), "Expected argument `p` to be a probability in [0, 1) but got 1"),
        (lambda: check_bool("bias", 0), "Expected argument `bias` to be a boolean but got 0"),
        (lambda: check_bool("bias", "true"), "Expected argument `bias` to be a boolean but got 'true'"),
        (lambda: check_choice("loss", "l1", ["mse", "hinge"]), "Expected argument `loss` to be one of mse, hinge but got 'l1'"),
    ],
)
def test_each_check_raises_a_config_error_in_the_one_message_style(call, message):
    with pytest.raises(ConfigError) as err:
        call()
    assert str(err.value) == message


def test_good_values_pass_including_numpy_scalars():
    check_int("n", 3, minimum=3, maximum=3)
    check_int("n", np.int64(4), minimum=1)
    check_int("n", None, allow_none=True)
    check_number("lr", 0, 0.0)
    check_number("lr", np.float32(0.5), 0.0, 1.0, strict_minimum=True, strict_maximum=True)
    check_number("lr", None, allow_none=True)
    check_probability("p", 0)
    check_probability("p", 1.0)
    check_bool("bias", False)
    assert issubclass(ConfigError, ValueError)  # callers that catch ValueError keep working


# ---- every class that takes user values ------------------------------------------------------------------
def mlp(**kwargs):
    return TwoLayerMLP(3, 4, **kwargs)


BOOLEANS_AS_INTEGERS = [
    (lambda: SupervisedModule(mlp(), replicas=True), "replicas"),
    (lambda: SupervisedModule(mlp(), rule="ist", ist_parts=True), "ist_parts"),
    (lambda: SupervisedModule(mlp(), seed=True), "seed"),
    (lambda: SupervisedModule(mlp(), replicas=2, replica_seeds=[False]), "replica_seeds"),
    (lambda: SupervisedModule(mlp(), lr=True), "lr"),
    (lambda: SupervisedModule(mlp(), layer_lr={"fc2": True}), r"layer_lr\[fc2\]"),
    (lambda: SupervisedModule(mlp(), optimizer="entropy_sgd", entropy_inner_steps=True), "inner_steps"),
    (lambda: GaussianMixture(n_train=True), "n_train"),
    (lambda: GaussianMixture(n_test=True), "n_test"),
    (lambda: GaussianMixture(batch_size=True), "batch_size"),
    (lambda: GaussianMixture(seed=True), "seed"),
    (lambda: GaussianMixture(eval_batch_size=True), "eval_batch_size"),
    (lambda: GaussianMixture(label_noise=True), "label_noise"),
    (lambda: GaussianMixture(dim=True), "dim"),
    (lambda: GaussianMixture(xor=1), "xor"),
    (lambda: SparseParity(n=20, k=True), "k"),
    (lambda: SignalNoisePatches(dim=True), "dim"),
    (lambda: TeacherStudent(noise_std=True), "noise_std"),
    (lambda: MNIST1D(flatten=1), "flatten"),
    (lambda: MNIST(data_dir="/nonexistent/overparam", classes=[True, 2]), "classes"),
    (lambda: TwoLayerMLP(True, 4), "input_dim"),
    (lambda: mlp(output_dim=True), "output_dim"),
    (lambda: mlp(bias=1), "bias"),
    (lambda: mlp(symmetric_init=0), "symmetric_init"),
    (lambda: mlp(init_scale=True), "init_scale"),
    (lambda: mlp(dropout=False), "dropout"),
    (lambda: LowRankFactorization(3, depth=True), "depth"),
    (lambda: ResidualMLP(3, depth=True), "depth"),
    (lambda: ResNet(width_multiplier=True), "width_multiplier"),
    (lambda: ResNet(batch_norm=1), "batch_norm"),
    (lambda: RandomFeatures(3, double=1), "double"),
    (lambda: ShallowCNN(4, num_patches=True), "num_patches"),
    (lambda: ShallowCNN(4, relu_power=True), "relu_power"),
    (lambda: image_shape(784, (True, 28, 28)), "input_shape"),
    (lambda: EntropySGD([torch.zeros(1, requires_grad=True)], inner_steps=True), "inner_steps"),
    (lambda: SAM([torch.zeros(1, requires_grad=True)], adaptive=1), "adaptive"),
    (lambda: Flatness(n_samples=True), "n_samples"),
    (lambda: Flatness(sigma=True), "sigma"),
    (lambda: Diagnostic(every_n_epochs=True), "every_n_epochs"),
]


@pytest.mark.parametrize("make, field", BOOLEANS_AS_INTEGERS, ids=[f for _, f in BOOLEANS_AS_INTEGERS])
def test_booleans_are_refused_where_integers_numbers_or_flags_are_expected(make, field):
    with pytest.raises(
        ConfigError, match=f"^Expected argument `{field}` to be .* but got (True|False|1|0|\\[True, 2\\]|\\(True, 28, 28\\)|\\[False\\])$"
    ):
        make()


def _sam_without_closure():
    p = torch.zeros(1, requires_grad=True)
    SAM([p]).step()


BAD_VALUES = [
    (lambda: SupervisedModule(mlp(), rule="hebb"), "rule"),
    (lambda: SupervisedModule(mlp(), momentum=-0.5), "momentum"),
    (lambda: SupervisedModule(mlp(), replicas=3, replica_seeds=[1]), "replica_seeds"),
    (lambda: SupervisedModule(mlp(), layer_lr={"fc9": 2.0}), "layer_lr"),
    (lambda: SupervisedModule(RandomFeatures(3), rule="ist"), "ist"),
    (lambda: param_groups(mlp(), 0.1, {"fc3": 1.0}), "layer_lr"),
    (lambda: param_groups(mlp(), 0.1, {"fc2": -1.0}), r"`layer_lr\[fc2\]` to be a finite number >= 0"),
    (lambda: check_ist_net(mlp(), 5), "ist_parts"),
    (lambda: ist_loss(mlp(), None, torch.zeros(1, 3), torch.zeros(1, 1), 2, torch.Generator()), "ist_parts"),
    (lambda: apply_rule(mlp(), "fa", feedback_scale=0.0), "feedback_scale"),
    (lambda: apply_rule(apply_rule(mlp(), "fa"), "fa"), "net"),
    (lambda: apply_rule(torch.nn.ReLU(), "fa"), "net"),
    (lambda: losses.per_sample_loss("hinge", torch.zeros(2, 1), torch.zeros(2, 1)), "loss"),
    (lambda: losses.per_sample_loss("l1", torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)), "loss"),
    (lambda: build_optimizer("lbfgs", [torch.zeros(1, requires_grad=True)], 0.1), "optimizer"),
    (lambda: build_optimizer("sgd", [torch.zeros(1, requires_grad=True)], 0.1, rho=0.1), "sgd"),
    (lambda: SAM([torch.zeros(1, requires_grad=True)], base_optimizer="rmsprop"), "base_optimizer"),
    (_sam_without_closure, "closure"),
    (lambda: EntropySGD([torch.zeros(1, requires_grad=True)], alpha=1.5), "alpha"),
    (lambda: GaussianMixture(n_clusters=3), "n_clusters"),
    (lambda: GaussianMixture(cluster_std=-1.0), "cluster_std"),
    (lambda: LowDimManifold(target="teacher", label_noise=0.1), "label_noise"),
    (lambda: SparseParity(n=3, k=4), "k"),
    (lambda: link_function("cubic"), "link"),
    (lambda: SingleIndex(noise=math.nan), "noise"),
    (lambda: OneDimensional(a=1.0, b=0.0), "b"),
    (lambda: OneDimensional(target="cos"), "target"),
    (lambda: LowDimManifold(d0=5, d=3), "d0"),
    (lambda: LowDimManifold(manifold="torus"), "manifold"),
    (lambda: SignalNoisePatches(noise_std=0.0), "noise_std"),
    (lambda: MNIST1D(n_train=4001), "n_train"),
    (lambda: MNIST(data_dir="/nonexistent/overparam"), "/nonexistent/overparam"),
    (lambda: stratified_indices(torch.tensor([0, 1]), [0, 1], 3, torch.Generator()), "only 2 samples"),
    (lambda: mlp(activation="swish"), "activation"),
    (lambda: TwoLayerMLP(3, 5, symmetric_init=True), "width"),
    (lambda: ShallowCNN(5, num_patches=2), "num_patches"),
    (lambda: SmallConvNet(12, input_shape=(3, 2, 2)), "input_shape"),
    (lambda: ResNet(depth=21), "depth"),
    (lambda: image_shape(10), "input_shape"),
    (lambda: perturbed_loss_increase(mlp(), None, torch.zeros(1, 3), torch.zeros(1, 1), sigma=-0.1), "sigma"),
    (lambda: match_neurons(RandomFeatures(3), mlp()), "student"),
    (lambda: match_neurons(TwoLayerMLP(2, 4), mlp()), "input_dim"),
]


@pytest.mark.parametrize("make, field", BAD_VALUES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_VALUES)])
def test_every_bad_value_raises_a_config_error_naming_it(make, field):
    with pytest.raises(ConfigError, match=field) as err:
        make()
    assert type(err.value) is ConfigError


DATA_MODULES = {
    "GaussianMixture": GaussianMixture,
    "TeacherStudent": TeacherStudent,
    "SparseParity": SparseParity,
    "SingleIndex": SingleIndex,
    "OneDimensional": OneDimensional,
    "LowDimManifold": LowDimManifold,
    "SignalNoisePatches": SignalNoisePatches,
    "MNIST": lambda **kw: MNIST(data_dir="/nonexistent/overparam", download=True, **kw),  # no files read at construction
    "CIFAR10": lambda **kw: CIFAR10(data_dir="/nonexistent/overparam", download=True, **kw),
    "MNIST1D": MNIST1D,
}


@pytest.mark.parametrize("name", DATA_MODULES)
def test_data_modules_pass_the_common_arguments_to_the_base_by_keyword(name, monkeypatch):
    base = TensorDataModule.__init__

    def keywords_only(self, *args, **kwargs):
        assert not args, f"{type(self).__name__} passes {args} to TensorDataModule by position"
        base(self, **kwargs)

    monkeypatch.setattr(TensorDataModule, "__init__", keywords_only)
    dm = DATA_MODULES[name](n_test=5, batch_size=2, seed=9, eval_batch_size=4)
    assert (dm.n_test, dm.batch_size, dm.seed, dm.eval_batch_size) == (5, 2, 9, 4)
