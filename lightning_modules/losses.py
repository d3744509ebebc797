"""Per-sample losses and predictions for regression, binary and multiclass targets.

Targets come in two kinds: real-valued (regression, float ``y`` of shape (n,) or (n, k)) and
class indices (integer ``y`` of shape (n,)). A net with one output on class labels {0, 1} is a
binary classifier with score f and label t = 2y − 1 ∈ {±1}; a net with C outputs is a C-class one.

| loss          | binary (t ∈ ±1)   | C classes                     | regression              |
|---------------|-------------------|-------------------------------|-------------------------|
| mse           | ½ (f − t)²        | ½ ‖f − e_y‖²                   | ½ ‖f − y‖²              |
| cross_entropy | log(1 + e^(−t f)) | −log softmax(f)_y              | —                       |
| logistic      | log(1 + e^(−t f)) | −log softmax(f)_y              | —                       |
| hinge         | max(0, 1 − t f)   | multi-margin (Weston–Watkins)  | —                       |

The training loss is the mean over samples of these, e.g. L = 1/(2n) Σᵢ ‖f(xᵢ) − yᵢ‖² for mse.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lightning_modules.checks import ConfigError

LossName = Literal["mse", "cross_entropy", "hinge", "logistic"]
LOSSES = ("mse", "cross_entropy", "hinge", "logistic")


def is_classification(y: torch.Tensor) -> bool:
    return not torch.is_floating_point(y)


def per_sample_loss(name: str, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Loss of each sample, shape (n,). ``output`` is (n, k); see the table above.

    Raises:
        ConfigError: for a classification loss on real-valued targets, or an unknown name.
    """
    if not is_classification(y):
        if name != "mse":
            raise ConfigError(f"Expected argument `loss` to be mse for real-valued targets but got {name!r}")
        return 0.5 * ((output - y.reshape(output.shape)) ** 2).sum(dim=1)
    if output.shape[1] == 1:  # binary: score f, label t = ±1
        f, t = output[:, 0], 2.0 * y.to(output.dtype) - 1.0
        if name == "mse":
            return 0.5 * (f - t) ** 2
        if name in ("cross_entropy", "logistic"):
            return F.softplus(-t * f)
        if name == "hinge":
            return torch.relu(1.0 - t * f)
    else:
        if name == "mse":
            return 0.5 * ((output - F.one_hot(y, output.shape[1]).to(output.dtype)) ** 2).sum(dim=1)
        if name in ("cross_entropy", "logistic"):
            return F.cross_entropy(output, y, reduction="none")
        if name == "hinge":
            return F.multi_margin_loss(output, y, reduction="none")
    raise ConfigError(f"Expected argument `loss` to be one of {', '.join(LOSSES)} but got {name!r}")


def mse_targets(y: torch.Tensor, outputs: int) -> torch.Tensor:
    """The targets the mse loss fits, (n, outputs): y itself for regression, t = 2y − 1 for binary labels
    with one output, one-hot e_y for C classes (the table above).

    >>> mse_targets(torch.tensor([0, 1]), 1).tolist()
    [[-1.0], [1.0]]
    >>> mse_targets(torch.tensor([2, 0]), 3).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if not is_classification(y):
        return y.reshape(len(y), outputs)
    if outputs == 1:
        return (2.0 * y.float() - 1.0)[:, None]
    return F.one_hot(y, outputs).float()


def mean_loss(name: str, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss: the mean of :func:`per_sample_loss`."""
    return per_sample_loss(name, output, y).mean()


def correct(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1.0 where the predicted class equals the label (sign of f for one output, argmax else)."""
    pred = (output[:, 0] > 0).long() if output.shape[1] == 1 else output.argmax(dim=1)
    return (pred == y).to(output.dtype)
