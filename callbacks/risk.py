"""Excess risk of a linear estimate on Gaussian data of known covariance (benign overfitting in linear regression)."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from typing_extensions import override

from callbacks.diagnostic import Diagnostic, module_net
from lightning_modules.checks import ConfigError
from lightning_modules.nets.random_features import LinearModel


def excess_risk(theta: torch.Tensor, beta: torch.Tensor, eigenvalues: torch.Tensor) -> float:
    """E_x ‖(θ − βᵀ) x‖² = Σ_i λ_i ‖θ_{:,i} − β_i‖² for x ~ N(0, diag(λ)): the test MSE of θ above the noise
    floor (Bartlett et al. 2020). θ (k, d) as ``LinearModel.readout.weight``, β (d, k), λ (d,); float64.

    >>> excess_risk(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0], [0.0]]), torch.tensor([2.0, 3.0]))
    2.0
    """
    diff = theta.double().cpu() - beta.double().cpu().T  # (k, d)
    return float((diff**2 * eigenvalues.double().cpu()).sum())


class ExcessRisk(Diagnostic):
    """Logs ``risk/excess`` = :func:`excess_risk` (θ, β, λ) of a :class:`LinearModel` on data that expose ``beta``
    (d, k) and the covariance ``eigenvalues`` (d,) (e.g. ``datamodules.synthetic.LinearGaussian``); the suite's
    test loss estimates ½ (risk/excess + σ²) from samples, this is its exact value. Measured at the start (after
    a closed-form readout is solved), every ``every_n_epochs`` epochs and at the end of training.

    Raises:
        ConfigError: before training, on another net or on data without ``beta`` and ``eigenvalues``.
    """

    @override
    def check_fit(self, pl_module: pl.LightningModule, data) -> None:
        super().check_fit(pl_module, data)
        net = module_net(pl_module)
        if not isinstance(net, LinearModel):
            raise ConfigError(f"Expected a LinearModel net for ExcessRisk but got {type(net).__name__}")
        if not (hasattr(data, "beta") and hasattr(data, "eigenvalues")):
            raise ConfigError(
                f"Expected data with `beta` and `eigenvalues` (e.g. LinearGaussian) for ExcessRisk but got {type(data).__name__}"
            )

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        start, data = time.perf_counter(), trainer.datamodule
        risk = excess_risk(module_net(pl_module).readout.weight.detach(), data.beta, data.eigenvalues)
        return {"risk/excess": risk, "diag/risk_seconds": time.perf_counter() - start}
