"""Training a two-layer net through random subnetworks: independent subnetwork training (IST; Yuan et al.
2022, "Distributed learning of fully connected neural networks using independent subnet training") and
its generalisation by Liao & Kyrillidis (2022, "On the convergence of shallow neural network training
with randomly masked neurons").

Each round draws p masks M_l ∈ {0, 1}^m (l = 1..p) over the m hidden units, from (seed, step) alone:

* ``keep_prob = None`` (IST): the units are split at random into p disjoint groups G_1..G_p, M_l the
  indicator of G_l, and the batch into p chunks (``tensor_split``: exactly p pieces, sizes ⌊·/p⌋ or
  ⌈·/p⌉, so m ≥ p and batch ≥ p are required); surrogate l is trained on chunk l alone. A unit's
  keep probability is ξ = 1/p.
* ``keep_prob = ξ``: the p·m entries of the masks are independent Bernoulli(ξ) (units shared by
  several surrogates, or by none), and every surrogate sees the whole batch, as in Liao & Kyrillidis.

Surrogate l keeps the units of M_l, rescaled by 1/ξ as in inverted dropout (so the full net is the
surrogates' mean over the draw of the masks):

    f_l(x) = c2 · W2 · ((M_l / ξ) ⊙ σ(c1 W1 x + b1)) + b2.

Each surrogate starts from the round's weights W and takes τ gradient steps of size η on its loss
L_l(f_l); the round ends with the merge of Liao & Kyrillidis: each unit r (its row of W1, b1 and
column of W2) becomes the mean of its copies in the N_r surrogates that hold it,

    w_r ← w_r + (1/N_r) Σ_{l: M_lr = 1} (w_r^{l,τ} − w_r)      (unchanged when N_r = 0),

and the output bias b2, which every surrogate holds, the mean of all p copies. With τ = 1 the merged
step is one gradient step on Σ_l L_l with unit r's gradient divided by N_r and b2's by p: one backward
pass (:func:`ist_loss`, then :func:`average_shared_gradients`), and any optimizer may take it. With
τ > 1 (:func:`local_round`) the merged change Δ is handed to the optimizer as the gradient −Δ/η, which
plain SGD with step η turns into W + Δ. With p = 1 and no keep probability this is ordinary training.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from lightning_modules.checks import ConfigError, check_int, check_number, check_positive_int


def step_generator(seed: Optional[int], step: int) -> torch.Generator:
    """The source of round ``step``'s masks: a function of (seed, step) alone, so a resumed run and every
    replica draw the same ones."""
    return torch.Generator().manual_seed((0 if seed is None else seed) * 1_000_003 + step)


def check_ist_net(net: nn.Module, parts: int = 1, keep_prob: Optional[float] = None) -> None:
    """Raise :class:`ConfigError` unless ``net`` is a two-layer net with ``features``, ``fc2`` and ``c2``,
    ``parts`` is a positive integer, ``keep_prob`` None or in (0, 1], and (for disjoint groups, when
    ``keep_prob`` is None) the net has at least ``parts`` hidden units (one per subnetwork)."""
    check_positive_int("ist_parts", parts)
    if keep_prob is not None:
        check_number("ist_keep_prob", keep_prob, 0.0, strict_minimum=True)
        if keep_prob > 1:
            raise ConfigError(f"Expected argument `ist_keep_prob` to be a probability in (0, 1] or null but got {keep_prob!r}")
    if not all(hasattr(net, a) for a in ("features", "fc2", "c2", "width")):
        raise ConfigError(f"Expected a two-layer net (TwoLayerMLP) for rule `ist` but got {type(net).__name__}")
    if keep_prob is None and parts > net.width:
        raise ConfigError(
            f"Expected argument `ist_parts` to be <= the net's width {net.width} (a hidden unit per subnetwork) but got {parts}"
        )


def check_local_steps(steps: int, optimizer: str, momentum: float, weight_decay: float, layer_lr: Optional[dict], lr_schedule: str) -> None:
    """τ > 1 local steps are plain gradient steps of size η merged into one SGD step of size η: refuse any
    other optimizer setting, which would step the merged change instead of adding it.

    Raises:
        ConfigError: ``steps`` no positive integer; with ``steps`` > 1, an optimizer other than plain SGD
            (no momentum, no weight decay, no ``layer_lr``, a constant schedule).
    """
    check_int("ist_local_steps", steps, minimum=1)
    if steps == 1:
        return
    settings = {"optimizer": (optimizer, "sgd"), "momentum": (momentum, 0), "weight_decay": (weight_decay, 0)}
    settings.update({"layer_lr": (dict(layer_lr or {}), {}), "lr_schedule": (lr_schedule, "constant")})
    for name, (value, plain) in settings.items():
        if value != plain:
            raise ConfigError(
                f"Expected argument `{name}` to be {plain!r} with `ist_local_steps` = {steps} (the merged local steps "
                f"are one plain SGD step) but got {value!r}"
            )


def ist_masks(width: int, parts: int, generator: torch.Generator, keep_prob: Optional[float] = None) -> torch.Tensor:
    """The round's masks M (p, m) of 0/1: disjoint groups ``randperm(m).tensor_split(p)`` when ``keep_prob``
    is None, else independent Bernoulli(ξ) entries."""
    if keep_prob is not None:
        return (torch.rand(parts, width, generator=generator) < keep_prob).float()  # (p, m)
    masks = torch.zeros(parts, width)
    for k, units in enumerate(torch.randperm(width, generator=generator).tensor_split(parts)):
        masks[k, units] = 1.0
    return masks  # (p, m), one 1 per column


def surrogate_loss(net: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, scaled_mask: torch.Tensor) -> torch.Tensor:
    """L(f_l) on (x, y), the units weighted by ``scaled_mask`` (m,) = M_l / ξ."""
    h = net.features(x.flatten(1)) * scaled_mask  # (n, m): only the surrogate's units, scaled by 1/ξ
    return loss_fn(net.fc2(h * net.c2), y)


def _surrogates(net: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: int, generator: torch.Generator, keep_prob: Optional[float]):
    """(scaled mask (m,), x_l, y_l) of each surrogate, and the counts N (m,) of surrogates holding each unit."""
    check_ist_net(net, parts, keep_prob)
    if keep_prob is None and parts > len(x):
        raise ConfigError(f"Expected argument `ist_parts` to be <= the batch size {len(x)} (a sample per subnetwork) but got {parts}")
    masks = ist_masks(net.width, parts, generator, keep_prob).to(device=x.device, dtype=x.dtype)  # (p, m)
    scale = float(parts) if keep_prob is None else 1.0 / keep_prob
    if keep_prob is None:
        chunks = zip(x.tensor_split(parts), y.tensor_split(parts))
    else:
        chunks = ((x, y) for _ in range(parts))
    return [(mask * scale, xl, yl) for mask, (xl, yl) in zip(masks, chunks)], masks.sum(0)


def ist_loss(
    net: nn.Module,
    loss_fn: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    parts: int,
    generator: torch.Generator,
    keep_prob: Optional[float] = None,
) -> torch.Tensor:
    """Σ_l L_l(f_l) of the p surrogates at the current weights (see the module docstring): its backward
    pass, followed by :func:`average_shared_gradients`, gives the merged step of τ = 1.

    Raises:
        ConfigError: for disjoint groups, when the width or the batch holds fewer than p units or samples.
    """
    surrogates, _ = _surrogates(net, x, y, parts, generator, keep_prob)
    total = x.new_zeros(())
    for scaled_mask, xl, yl in surrogates:
        total = total + surrogate_loss(net, loss_fn, xl, yl, scaled_mask)
    return total


def unit_parameters(net: nn.Module) -> list[tuple[nn.Parameter, Optional[int]]]:
    """Each trainable parameter with the axis that indexes the hidden units (W1: 0, b1: 0, W2: 1), or None
    for the output bias b2, which every surrogate holds."""
    axes = [(net.fc1.weight, 0), (net.fc1.bias, 0), (net.fc2.weight, 1), (net.fc2.bias, None)]
    return [(p, axis) for p, axis in axes if p is not None and p.requires_grad]


def merge(net: nn.Module, changes: list[list[torch.Tensor]], counts: torch.Tensor) -> list[torch.Tensor]:
    """The merged change of each of ``unit_parameters(net)``: Σ_l Δ_l over the N_r holders of unit r,
    divided by max(N_r, 1) (a unit's Δ_l is 0 in a surrogate without it), and the mean of the p Δ_l of b2."""
    merged = []
    for i, (param, axis) in enumerate(unit_parameters(net)):
        total = torch.stack([change[i] for change in changes]).sum(0)
        if axis is None:
            merged.append(total / len(changes))
        else:
            shape = [1] * param.dim()
            shape[axis] = -1
            merged.append(total / counts.clamp(min=1).view(shape))
    return merged


def stacked_surrogate_loss(
    net: nn.Module, loss_fn: Callable, copies: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, scaled_masks: torch.Tensor
) -> torch.Tensor:
    """Σ_l L(f_l) of g surrogates on the same (x, y), each with its own copy of the trainable weights.

    ``copies`` maps ``fc1.weight`` (g, m, d), ``fc1.bias`` (g, m), ``fc2.weight`` (g, k, m), ``fc2.bias``
    (g, k) to the surrogates' copies (the net's own tensor where a name is missing: a frozen layer);
    ``scaled_masks`` (g, m) holds M_l / ξ. The forward pass is TwoLayerMLP's, batched over l.
    """
    w1, b1 = copies.get("fc1.weight", net.fc1.weight), copies.get("fc1.bias", net.fc1.bias)
    w2, b2 = copies.get("fc2.weight", net.fc2.weight), copies.get("fc2.bias", net.fc2.bias)
    x = x.flatten(1) * net.c1  # (n, d)
    pre = torch.einsum("nd,gmd->gnm", x, w1) if w1.dim() == 3 else (x @ w1.T).unsqueeze(0)  # (g, n, m) or (1, n, m)
    if b1 is not None:
        pre = pre + (b1.unsqueeze(1) if b1.dim() == 2 else b1)
    h = net.sigma(pre) * scaled_masks.unsqueeze(1) * net.c2  # (g, n, m)
    out = torch.einsum("gnm,gkm->gnk", h, w2) if w2.dim() == 3 else h @ w2.T  # (g, n, k)
    if b2 is not None:
        out = out + (b2.unsqueeze(1) if b2.dim() == 2 else b2)
    return sum(loss_fn(out_l, y) for out_l in out)


def local_round(
    net: nn.Module,
    loss_fn: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    parts: int,
    generator: torch.Generator,
    lr: float,
    steps: int,
    keep_prob: Optional[float] = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One round of τ = ``steps`` local gradient steps of size η = ``lr`` by each surrogate on its own copy
    of the weights, and the merge (module docstring). Surrogates on the whole batch (``keep_prob`` set)
    step together, their copies stacked (p, ...) (:func:`stacked_surrogate_loss`); disjoint chunks one by one.

    Returns:
        (Σ_l L_l at the round's start, detached; the merged change Δ of each of ``unit_parameters(net)``).
    """
    surrogates, counts = _surrogates(net, x, y, parts, generator, keep_prob)
    names = {id(p): name for name, p in net.named_parameters()}
    start = {names[id(p)]: p.detach() for p, _ in unit_parameters(net)}  # the round's weights, by name
    masks = torch.stack([mask for mask, _, _ in surrogates])  # (p, m)
    if keep_prob is not None:  # every surrogate on (x, y): one batched step for all p
        groups = [(list(range(parts)), x, y)]
    else:
        groups = [([l], xl, yl) for l, (_, xl, yl) in enumerate(surrogates)]
    start_loss, changes = x.new_zeros(()), [None] * parts
    for members, xl, yl in groups:
        copies = {k: v.expand(len(members), *v.shape).clone().requires_grad_() for k, v in start.items()}  # (g, ...)
        for t in range(steps):
            loss = stacked_surrogate_loss(net, loss_fn, copies, xl, yl, masks[members])
            start_loss = start_loss + loss.detach() if t == 0 else start_loss
            grads = torch.autograd.grad(loss, list(copies.values()))  # each copy: its own surrogate's gradient
            copies = {k: (v - lr * g).detach().requires_grad_() for (k, v), g in zip(copies.items(), grads)}
        for i, l in enumerate(members):
            changes[l] = [copies[k][i].detach() - v for k, v in start.items()]
    return start_loss, merge(net, changes, counts)


def local_round_loss(
    net: nn.Module,
    loss_fn: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    parts: int,
    generator: torch.Generator,
    lr: float,
    steps: int,
    keep_prob: Optional[float] = None,
) -> torch.Tensor:
    """A scalar worth Σ_l L_l at the round's start whose gradient is −Δ/η for the merged change Δ of
    :func:`local_round`: one plain SGD step of size η on it lands on the merged weights."""
    start_loss, merged = local_round(net, loss_fn, x, y, parts, generator, lr, steps, keep_prob)
    pull = sum(((-(delta / lr) * p).sum() for delta, (p, _) in zip(merged, unit_parameters(net))), x.new_zeros(()))
    return start_loss + pull - pull.detach()


def average_shared_gradients(net: nn.Module, parts: int, counts: Optional[torch.Tensor] = None) -> None:
    """Merge step of τ = 1 on the gradient of :func:`ist_loss`: the output bias gets the mean, not the sum,
    of the p surrogate gradients; with ``counts`` N (m,) (overlapping masks), unit r gets Σ/max(N_r, 1)."""
    bias = net.fc2.bias
    if bias is not None and bias.grad is not None:
        bias.grad.div_(parts)
    if counts is None:
        return
    for param, axis in unit_parameters(net):
        if axis is not None and param.grad is not None:
            shape = [1] * param.dim()
            shape[axis] = -1
            param.grad.div_(counts.clamp(min=1).to(param.grad).view(shape))
