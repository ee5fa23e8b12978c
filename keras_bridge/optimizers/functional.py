"""Keras 3 optimizer update rules on lists of tensors (the torch backend's ``_parallel_update_step``).

Every function updates ``params`` and its state tensors in place with ``torch._foreach_*`` ops.
Scalars that Keras computes as float32 tensors (learning rate, bias corrections) are computed the same
way here, on 0-d float32 CPU tensors (:func:`f32`): torch's CPU ``sqrt`` is not always correctly
rounded, so NumPy would differ from Keras in the last bit. They reach the kernels as Python floats, so
no device tensor is ever read back. Scalars that Keras passes as Python floats (``1 - beta_1``, ``rho``,
``epsilon``) are passed as Python floats too, so both round the same way.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch

Tensor = torch.Tensor
TensorList = List[Tensor]


def f32(value: Any) -> Tensor:
    """``value`` as a 0-d float32 CPU tensor: Keras keeps the lr and the step maths in float32 tensors."""
    if isinstance(value, Tensor):  # a tensor lr set by the user (rare); reading it may sync
        return value.detach().to(device="cpu", dtype=torch.float32)
    return torch.tensor(value, dtype=torch.float32, device="cpu")


# ---- gradient clipping and weight decay (BaseOptimizer._clip_gradients / _apply_weight_decay) -----
def clip_by_norm(grads: Sequence[Tensor], clipnorm: float) -> TensorList:
    """Each gradient rescaled to L2 norm at most ``clipnorm``: ``g * c / max(||g||, c)``."""
    norms = torch._foreach_norm(list(grads))
    torch._foreach_clamp_min_(norms, clipnorm)
    clipped = torch._foreach_mul(list(grads), clipnorm)
    torch._foreach_div_(clipped, norms)
    return list(clipped)


def global_norm(grads: Sequence[Tensor]) -> Tensor:
    """The L2 norm of all gradients together (a 0-d tensor; no host sync)."""
    norms = torch._foreach_norm(list(grads))
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def clip_by_global_norm(grads: Sequence[Tensor], clipnorm: float, norm: Tensor) -> TensorList:
    """All gradients scaled by ``c * min(1/norm, 1/c)``; a non-finite ``norm`` makes them NaN, as in Keras."""
    scale = torch.clamp(norm.reciprocal(), max=1.0 / clipnorm) * clipnorm + (norm - norm)
    return list(torch._foreach_mul(list(grads), scale))


def clip_by_value(grads: Sequence[Tensor], clipvalue: float) -> TensorList:
    """Each gradient element clipped to ``[-clipvalue, clipvalue]``."""
    clipped = torch._foreach_clamp_min(list(grads), -clipvalue)
    torch._foreach_clamp_max_(clipped, clipvalue)
    return list(clipped)


def decay_weights(params: TensorList, lr: Tensor, weight_decay: float) -> None:
    """Decoupled weight decay ``v *= 1 - wd * lr`` (float32), applied before the update."""
    torch._foreach_mul_(params, float(f32(1.0) - f32(weight_decay) * lr))


# ---- update rules ---------------------------------------------------------------------------------
def sgd(params: TensorList, grads: TensorList, momentums: Optional[TensorList], *, lr: Tensor, momentum: float,
        nesterov: bool) -> None:  # fmt: skip
    """``m = momentum*m - lr*g``; ``v += m`` (or ``v += momentum*m - lr*g`` with Nesterov)."""
    if momentums is None:
        torch._foreach_add_(params, grads, alpha=-float(lr))
        return
    torch._foreach_mul_(momentums, momentum)
    torch._foreach_add_(momentums, grads, alpha=-float(lr))
    if nesterov:
        torch._foreach_add_(params, grads, alpha=-float(lr))
        torch._foreach_add_(params, momentums, alpha=momentum)
    else:
        torch._foreach_add_(params, momentums)


def rmsprop(
    params: TensorList,
    grads: TensorList,
    velocities: TensorList,
    momentums: Optional[TensorList],
    average_grads: Optional[TensorList],
    *,
    lr: Tensor,
    rho: float,
    momentum: float,
    epsilon: float,
) -> None:
    """``v = rho*v + (1-rho)*g^2``; ``inc = lr*g / sqrt(v - avg_g^2 + eps)``; epsilon inside the sqrt."""
    torch._foreach_mul_(velocities, rho)
    torch._foreach_add_(velocities, torch._foreach_mul(grads, grads), alpha=1 - rho)
    denominators = torch._foreach_add(velocities, epsilon)
    if average_grads is not None:
        torch._foreach_mul_(average_grads, rho)
        torch._foreach_add_(average_grads, grads, alpha=1 - rho)
        torch._foreach_sub_(denominators, torch._foreach_mul(average_grads, average_grads))
    torch._foreach_sqrt_(denominators)
    increments = list(torch._foreach_mul(grads, float(lr)))
    torch._foreach_div_(increments, denominators)
    if momentums is not None:
        torch._foreach_mul_(momentums, momentum)
        torch._foreach_add_(momentums, increments)
        increments = momentums
    torch._foreach_sub_(params, increments)


def adam(params: TensorList, grads: TensorList, m: TensorList, v: TensorList, v_hat: Optional[TensorList], *,
         lr: Tensor, beta_1: float, beta_2: float, epsilon: float, iteration: int) -> None:  # fmt: skip
    """Adam with Keras's ``alpha = lr*sqrt(1-b2^t)/(1-b1^t)``, ``t = iterations + 1``, eps outside the sqrt."""
    t = f32(iteration + 1)
    alpha = lr * torch.sqrt(1 - f32(beta_2) ** t) / (1 - f32(beta_1) ** t)
    torch._foreach_mul_(m, beta_1)
    torch._foreach_add_(m, grads, alpha=1 - beta_1)
    torch._foreach_mul_(v, beta_2)
    torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1 - beta_2)
    if v_hat is not None:
        torch._foreach_maximum_(v_hat, v)
        v = v_hat
    denominators = torch._foreach_sqrt(v)
    torch._foreach_add_(denominators, epsilon)
    steps = torch._foreach_mul(m, float(alpha))
    torch._foreach_div_(steps, denominators)
    torch._foreach_sub_(params, steps)


def adagrad(params: TensorList, grads: TensorList, accumulators: TensorList, *, lr: Tensor, epsilon: float) -> None:
    """``acc += g^2``; ``v -= lr*g / sqrt(acc + eps)``."""
    torch._foreach_add_(accumulators, torch._foreach_mul(grads, grads))
    denominators = torch._foreach_add(accumulators, epsilon)
    torch._foreach_sqrt_(denominators)
    steps = torch._foreach_mul(grads, float(lr))
    torch._foreach_div_(steps, denominators)
    torch._foreach_sub_(params, steps)


def adadelta(params: TensorList, grads: TensorList, accumulated_grads: TensorList, accumulated_deltas: TensorList, *,
             lr: Tensor, rho: float, epsilon: float) -> None:  # fmt: skip
    """``delta = -sqrt(E[dx^2] + eps) * g / sqrt(E[g^2] + eps)``; ``v += lr * delta``."""
    torch._foreach_mul_(accumulated_grads, rho)
    torch._foreach_add_(accumulated_grads, torch._foreach_mul(grads, grads), alpha=1 - rho)
    rms_delta = torch._foreach_add(accumulated_deltas, epsilon)
    torch._foreach_sqrt_(rms_delta)
    rms_grad = torch._foreach_add(accumulated_grads, epsilon)
    torch._foreach_sqrt_(rms_grad)
    deltas = torch._foreach_mul(rms_delta, grads)
    torch._foreach_div_(deltas, rms_grad)
    torch._foreach_neg_(deltas)
    torch._foreach_mul_(accumulated_deltas, rho)
    torch._foreach_add_(accumulated_deltas, torch._foreach_mul(deltas, deltas), alpha=1 - rho)
    torch._foreach_add_(params, deltas, alpha=float(lr))


def adamax(params: TensorList, grads: TensorList, m: TensorList, u: TensorList, *, lr: Tensor, beta_1: float,
           beta_2: float, epsilon: float, iteration: int) -> None:  # fmt: skip
    """``u = max(b2*u, |g|)``; ``v -= lr*m / ((1 - b1^t) * (u + eps))``, ``t = iterations + 1``."""
    correction = f32(1.0) - f32(beta_1) ** f32(iteration + 1)
    torch._foreach_mul_(m, beta_1)
    torch._foreach_add_(m, grads, alpha=1 - beta_1)
    torch._foreach_mul_(u, beta_2)
    torch._foreach_maximum_(u, torch._foreach_abs(grads))
    denominators = torch._foreach_add(u, epsilon)
    torch._foreach_mul_(denominators, float(correction))
    steps = torch._foreach_mul(m, float(lr))
    torch._foreach_div_(steps, denominators)
    torch._foreach_sub_(params, steps)


def nadam_u_product(u_product: float, beta_1: float, iteration: int) -> float:
    """The running product of Nadam's momentum coefficients after update ``iteration`` (float32)."""
    u_t = f32(beta_1) * (f32(1.0) - f32(0.5) * f32(0.96) ** f32(iteration + 1))
    return float(f32(u_product) * u_t)


def nadam(params: TensorList, grads: TensorList, m: TensorList, v: TensorList, *, lr: Tensor, beta_1: float,
          beta_2: float, epsilon: float, iteration: int, u_product: float) -> None:  # fmt: skip
    """Nadam update; ``u_product`` is the product ``u_1 * ... * u_t`` already including this step."""
    decay, b1 = f32(0.96), f32(beta_1)
    u_t = b1 * (f32(1.0) - f32(0.5) * decay ** f32(iteration + 1))
    u_next = b1 * (f32(1.0) - f32(0.5) * decay ** f32(iteration + 2))
    product = f32(u_product)
    product_next = product * u_next
    beta_2_power = f32(beta_2) ** f32(iteration + 1)
    torch._foreach_mul_(m, beta_1)
    torch._foreach_add_(m, grads, alpha=1 - beta_1)
    torch._foreach_mul_(v, beta_2)
    torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1 - beta_2)
    m_hat = torch._foreach_mul(m, float(u_next))
    torch._foreach_div_(m_hat, float(f32(1.0) - product_next))
    g_part = torch._foreach_mul(grads, float(f32(1.0) - u_t))
    torch._foreach_div_(g_part, float(f32(1.0) - product))
    torch._foreach_add_(m_hat, g_part)
    denominators = torch._foreach_div(v, float(f32(1.0) - beta_2_power))
    torch._foreach_sqrt_(denominators)
    torch._foreach_add_(denominators, epsilon)
    torch._foreach_mul_(m_hat, float(lr))
    torch._foreach_div_(m_hat, denominators)
    torch._foreach_sub_(params, m_hat)


def ema_update(averages: TensorList, params: TensorList, ema_momentum: float, iteration: int) -> None:
    """``avg = mom*avg + (1-mom)*v`` with ``mom = 0`` at iteration 0 (so the average starts at ``v``)."""
    momentum = f32(ema_momentum) if iteration != 0 else f32(0.0)
    torch._foreach_mul_(averages, float(momentum))
    torch._foreach_add_(averages, params, alpha=float(f32(1.0) - momentum))
