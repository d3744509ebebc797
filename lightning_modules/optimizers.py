"""Flat-minima optimizers: SAM (Foret et al., 2021) and Entropy-SGD (Chaudhari et al., 2017).

Both read only ``p.grad`` as autograd leaves it, so they work with every net and every learning
rule (feedback alignment puts its own update into ``p.grad``; the optimizers take it as "the gradient").

Closure protocol. A step needs gradients at points other than the current weights, so
``step(closure)`` takes torch's closure: a function that re-evaluates the loss on the current batch,
runs ``backward()`` and returns the loss. The optimizer sets every ``.grad`` to ``None`` before each
call, moves the weights, calls the closure, and restores the weights bit-exactly afterwards.
Lightning's automatic optimization passes such a closure (``training_step`` + ``zero_grad`` +
``backward``) to ``optimizer.step``, and the closure may be called any number of times. What follows
under Lightning:

- ``training_step`` (and its ``self.log`` calls, ``on_before_backward`` / ``on_after_backward`` /
  ``on_before_optimizer_step`` hooks, gradient clipping) runs once per closure call: 2× per step for
  SAM, ``inner_steps``× for Entropy-SGD, all on the same batch. The step output Lightning hands to
  ``on_train_batch_end`` is the last call's loss (at w + ε, resp. the last inner iterate);
  ``step()`` itself returns the loss at the current weights. Whole-set metrics are unaffected.
- ``accumulate_grad_batches`` must be 1 (each call clears the gradients), and 16-bit mixed precision
  (a GradScaler, which calls ``step()`` without a closure) is refused; bf16 works.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Literal, Optional

import torch

from lightning_modules.checks import ConfigError, check_bool, check_choice, check_number, check_positive_int

OptimizerName = Literal["sgd", "adam", "sam", "entropy_sgd"]
OPTIMIZERS = ("sgd", "adam", "sam", "entropy_sgd")
Closure = Callable[[], Optional[torch.Tensor]]


def _evaluate(closure: Optional[Closure], params: list[torch.Tensor], who: str) -> Optional[torch.Tensor]:
    """Clear ``.grad`` and run the closure (forward + backward) with autograd on."""
    if closure is None:
        raise ConfigError(
            f"Expected argument `closure` to re-evaluate the loss and its gradients ({who} calls it "
            "several times per step) but got None; 16-bit mixed precision is not supported"
        )
    for p in params:
        p.grad = None
    with torch.enable_grad():
        return closure()


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization (Foret et al., 2021, "Sharpness-Aware Minimization for
    Efficiently Improving Generalization"), one step on weights w (all parameter tensors together):

        g     = ∇L(w)                                    closure() at w
        ε     = ρ g / ‖g‖₂                               ‖·‖ over all parameters (of a block) jointly
        ε     = ρ w² g / ‖|w| g‖₂    (adaptive=True: ASAM, Kwon et al., 2021; products elementwise)
        g_SAM = ∇L(w + ε)                                closure() at w + ε
        w     ← base step from w with the gradient g_SAM  (torch SGD or Adam)

    Weight decay λ is the base optimizer's (λw added to g_SAM at the restored w); ε uses the loss
    gradient only, as in the paper. ‖g‖ = 0 gives ε = 0 (ρ/(‖g‖ + 1e-12)). Blocks: the norm runs over
    the param groups that share a ``"block"`` key (groups without one form one block), so models
    trained side by side in one optimizer (the module's replicas, ``block`` = replica index) each
    take the step SAM would take on that model alone, with its own radius ρ. ``param_groups`` and
    ``state`` are the base optimizer's, so per-group learning rates, LR schedulers and checkpoints
    act on it directly.

    Args:
        params: parameters or parameter groups (``lr`` per group allowed).
        base_optimizer: ``sgd`` (heavy-ball momentum, coupled weight decay) or ``adam``
            (β = (0.9, 0.999); ``momentum`` is ignored).
        rho: ρ, the radius of the ascent step.
        adaptive: scale ε by |w| (ASAM).
        lr, momentum, weight_decay: of the base optimizer.

    Raises:
        ConfigError: on an unknown ``base_optimizer``, an out-of-range number or a non-boolean ``adaptive``.
    """

    def __init__(
        self,
        params: Iterable,
        base_optimizer: Literal["sgd", "adam"] = "sgd",
        rho: float = 0.05,
        adaptive: bool = False,
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        check_choice("base_optimizer", base_optimizer, ("sgd", "adam"))
        check_number("rho", rho, 0.0, strict_minimum=True)
        check_bool("adaptive", adaptive)
        super().__init__(params, {"lr": lr})
        self.base_optimizer = _plain(base_optimizer, self.param_groups, lr, momentum, weight_decay)
        self.param_groups = self.base_optimizer.param_groups  # the same dicts: one set of hyperparameters
        self.state = self.base_optimizer.state
        self.rho, self.adaptive = rho, adaptive

    @torch.no_grad()
    def step(self, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:  # type: ignore[override]
        """One SAM step (see the class docstring); returns the loss at w.

        Raises:
            ConfigError: without a closure (e.g. under 16-bit mixed precision).
        """
        params = _params(self)
        loss = _evaluate(closure, params, "SAM")
        live = [p for p in params if p.grad is not None]
        if not live:  # e.g. training_step returned None: nothing to do
            return loss
        saved = [p.detach().clone() for p in live]
        for block in self._blocks().values():
            block = [p for p in block if p.grad is not None]
            if not block:
                continue
            scaled = [p.grad * p.abs() if self.adaptive else p.grad for p in block]  # T g
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s.double()) for s in scaled]))  # ‖T g‖ over the block
            scale = self.rho / (norm + 1e-12)
            for p, s in zip(block, scaled):
                p.add_((s * p.abs() if self.adaptive else s) * scale.to(p.dtype))  # w + ε
        try:
            _evaluate(closure, params, "SAM")  # g_SAM = ∇L(w + ε) in .grad
        finally:
            for p, w in zip(live, saved):
                p.copy_(w)
        self.base_optimizer.step()
        return loss

    def _blocks(self) -> dict:
        """Parameters by the ``"block"`` key of their group (one norm per block)."""
        blocks: dict = {}
        for group in self.param_groups:
            blocks.setdefault(group.get("block", 0), []).extend(group["params"])
        return blocks

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups, self.state = self.base_optimizer.param_groups, self.base_optimizer.state


class EntropySGD(torch.optim.Optimizer):
    """Entropy-SGD (Chaudhari et al., 2017, "Entropy-SGD: Biasing Gradient Descent Into Wide
    Valleys", Algorithm 1), one step on weights x, per parameter tensor:

        x'₀ = μ₀ = x
        for ℓ = 0 … L−1:                                         L = inner_steps
            g'    = ∇f(x'_ℓ) + λ x'_ℓ − γ (x − x'_ℓ)               closure() at x'_ℓ
            x'ℓ₊₁ = x'_ℓ − η' g' + √η' · ε · ξ_ℓ,  ξ_ℓ ~ N(0, I)    η' = inner_lr, ε = noise
            μ_ℓ₊₁ = (1 − α) μ_ℓ + α x'ℓ₊₁
        d = γ (x − μ_L)                                          = −∇ₓ local entropy F(x; γ)
        b ← m b + d   (b = d on the first step)                  m = momentum
        x ← x − η b                                              η = lr (per group)

    Choices, stated: every inner step re-evaluates the *same* minibatch (the closure; Lightning's
    closure re-runs ``training_step`` on the batch of this step), where the paper samples a new one
    per inner step; γ is fixed (no "scoping" schedule); weight decay λ is part of the smoothed loss f,
    so it enters the inner gradients only. ξ is drawn from ``generator`` (CPU, then moved to the
    parameter's device) or from the global torch RNG when it is None. Each step costs L forward and
    backward passes; ``.grad`` is left holding the last inner gradient ∇f(x'_{L−1}).
    Step sizes: η γ = 1 moves x onto μ_L; η γ ≪ 1 makes the outer step tiny (pick lr near 1/γ).

    The average μ follows the paper's Algorithm 1, μ ← (1 − α) μ + α x', the newest iterate weighted
    by α. The authors' code (github.com/ucla-vision/entropy-sgd, python/optim.py) writes
    ``mw.mul_(beta1).add_(1-beta1, w)``, i.e. μ ← β₁ μ + (1 − β₁) x' with β₁ = 0.75: the newest
    iterate weighted by 1 − β₁ = 0.25. We follow the paper: Algorithm 1 is the method as published
    and cited, and the tests check this recursion against it. Both use 0.75, so the defaults
    differ: after L = 5 steps μ keeps 0.25⁵ ≈ 0.001 of the start x here and 0.75⁵ ≈ 0.24 in the
    code (which shortens d = γ(x − μ) by a quarter or more). ``alpha=0.25`` reproduces the code's
    average. (The code also steps x ← x − η(x − μ), without γ, and adds noise ε√(2η').)

    Args:
        params: parameters or parameter groups (``lr`` per group allowed).
        lr: η, the outer step size.
        gamma: γ, the coupling ("scope") of the local entropy; larger γ = a narrower neighbourhood.
        inner_steps: L, Langevin steps per outer step.
        inner_lr: η', the Langevin step size.
        noise: ε, the thermal noise (0 = plain gradient descent in the inner loop).
        alpha: α, the weight of the newest iterate in the running average μ (the paper's α; the
            authors' code weights it by 1 − α, see above).
        momentum, weight_decay: m and λ above.
        generator: source of ξ (for reproducible tests).

    Raises:
        ConfigError: on an out-of-range number.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.1,
        gamma: float = 0.03,
        inner_steps: int = 5,
        inner_lr: float = 0.1,
        noise: float = 1e-4,
        alpha: float = 0.75,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        check_number("lr", lr, 0.0)
        check_number("gamma", gamma, 0.0, strict_minimum=True)
        check_positive_int("inner_steps", inner_steps)
        check_number("inner_lr", inner_lr, 0.0, strict_minimum=True)
        check_number("noise", noise, 0.0)
        check_number("alpha", alpha, 0.0, 1.0, strict_minimum=True)
        check_number("momentum", momentum, 0.0, 1.0, strict_maximum=True)
        check_number("weight_decay", weight_decay, 0.0)
        defaults = {
            "lr": lr,
            "gamma": gamma,
            "inner_lr": inner_lr,
            "noise": noise,
            "alpha": alpha,
            "momentum": momentum,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)
        self.inner_steps, self.generator = inner_steps, generator

    def _noise(self, p: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            return torch.randn_like(p)
        return torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)

    @torch.no_grad()
    def step(self, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:  # type: ignore[override]
        """One Entropy-SGD step (see the class docstring); returns the loss at x.

        Raises:
            ConfigError: without a closure (e.g. under 16-bit mixed precision).
        """
        params = _params(self)
        x = {p: p.detach().clone() for p in params}  # the outer weights
        mu = {p: p.detach().clone() for p in params}
        loss = None
        try:
            for inner in range(self.inner_steps):
                value = _evaluate(closure, params, "EntropySGD")  # gradients at x'_ℓ (the current weights)
                loss = value if inner == 0 else loss
                for group in self.param_groups:
                    lr_in, gamma, alpha, wd, eps = (group[k] for k in ("inner_lr", "gamma", "alpha", "weight_decay", "noise"))
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        g = p.grad + wd * p - gamma * (x[p] - p)  # g' = ∇f(x') + λx' − γ(x − x')
                        p.sub_(lr_in * g)
                        if eps > 0:
                            p.add_(self._noise(p), alpha=math.sqrt(lr_in) * eps)
                        mu[p].mul_(1 - alpha).add_(p, alpha=alpha)
        finally:
            for p in params:
                p.copy_(x[p])
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = group["gamma"] * (x[p] - mu[p])
                if group["momentum"] > 0:
                    state = self.state[p]
                    if "momentum_buffer" in state:
                        d = state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    state["momentum_buffer"] = d
                p.sub_(group["lr"] * d)
        return loss


def _plain(name: str, groups: Iterable, lr: float, momentum: float, weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
    check_number("lr", lr, 0.0)
    check_number("momentum", momentum, 0.0, 1.0, strict_maximum=True)
    check_number("weight_decay", weight_decay, 0.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused or None)
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


_HYPER = {
    "sgd": (),
    "adam": (),
    "sam": ("rho", "adaptive", "base_optimizer"),
    "entropy_sgd": ("gamma", "inner_steps", "inner_lr", "noise", "alpha"),
}


def build_optimizer(
    name: OptimizerName,
    param_groups: Iterable,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    fused: bool = False,
    **hyper: object,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``param_groups`` (a list of dicts with ``params`` and ``lr``, or parameters).

    ``sgd``: torch SGD (heavy-ball momentum, coupled weight decay). ``adam``: torch Adam (β1 = 0.9,
    ``momentum`` ignored); ``fused`` picks torch's fused kernels for these two (they honour
    ``found_inf``, see divergence.py). ``sam``: :class:`SAM` over SGD, ``hyper`` from rho, adaptive, base_optimizer.
    ``entropy_sgd``: :class:`EntropySGD`, ``hyper`` from gamma, inner_steps, inner_lr, noise, alpha.

    >>> build_optimizer("sam", [torch.zeros(2, requires_grad=True)], lr=0.1, rho=0.1).rho
    0.1

    Raises:
        ConfigError: on an unknown name, a hyperparameter that ``name`` does not take, or an out-of-range value.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    for key in hyper:
        if key not in _HYPER[name]:
            allowed = ", ".join(_HYPER[name]) or "none"
            raise ConfigError(f"Expected the hyperparameters of optimizer {name!r} to be among ({allowed}) but got {key!r}")
    if name in ("sgd", "adam"):
        return _plain(name, param_groups, lr, momentum, weight_decay, fused)
    if name == "sam":
        return SAM(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **hyper)
    return EntropySGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **hyper)
