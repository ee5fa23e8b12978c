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

from keras_bridge.utils.compat import foreach

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
    norms = foreach.norm(list(grads))
    foreach.clamp_min_(norms, clipnorm)
    clipped = foreach.mul(list(grads), clipnorm)
    foreach.div_(clipped, norms)
    return list(clipped)


def global_norm(grads: Sequence[Tensor]) -> Tensor:
    """The L2 norm of all gradients together (a 0-d tensor; no host sync)."""
    norms = foreach.norm(list(grads))
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def clip_by_global_norm(grads: Sequence[Tensor], clipnorm: float, norm: Tensor) -> TensorList:
    """All gradients scaled by ``c * min(1/norm, 1/c)``; a non-finite ``norm`` makes them NaN, as in Keras."""
    scale = torch.clamp(norm.reciprocal(), max=1.0 / clipnorm) * clipnorm + (norm - norm)
    return list(foreach.mul(list(grads), scale))


def clip_by_value(grads: Sequence[Tensor], clipvalue: float) -> TensorList:
    """Each gradient element clipped to ``[-clipvalue, clipvalue]``."""
    clipped = foreach.clamp_min(list(grads), -clipvalue)
    foreach.clamp_max_(clipped, clipvalue)
    return list(clipped)


def decay_weights(params: TensorList, lr: Tensor, weight_decay: float) -> None:
    """Decoupled weight decay ``v *= 1 - wd * lr`` (float32), applied before the update."""
    foreach.mul_(params, float(f32(1.0) - f32(weight_decay) * lr))


def step_down(params: TensorList, numerators: TensorList, denominators: TensorList, scale: float) -> None:
    """``params -= numerators * scale / denominators``, elementwise, rounded as those three ops round.

    For float32 and float64 tensors one ``addcdiv_`` pass computes ``p + (-scale * n) / d``, which is
    ``p - (n * scale) / d`` bit for bit (a product's sign flips exactly and the kernel contracts nothing across the
    division), instead of three passes and a temporary; other dtypes (a lower-precision update rounds after
    each op) keep the three ops.

    Example:
        >>> p = [torch.ones(2)]
        >>> step_down(p, [torch.full((2,), 3.0)], [torch.full((2,), 2.0)], 0.5)
        >>> p[0]
        tensor([0.2500, 0.2500])
    """
    dtypes = {t.dtype for t in (*params, *numerators, *denominators)}
    if len(dtypes) == 1 and dtypes <= {torch.float32, torch.float64}:
        foreach.addcdiv_(params, numerators, denominators, value=-scale)
        return
    steps = foreach.mul(numerators, scale)
    foreach.div_(steps, denominators)
    foreach.sub_(params, steps)


# ---- update rules ---------------------------------------------------------------------------------
def sgd(params: TensorList, grads: TensorList, momentums: Optional[TensorList], *, lr: Tensor, momentum: float,
        nesterov: bool) -> None:  # fmt: skip
    """``m = momentum*m - lr*g``; ``v += m`` (or ``v += momentum*m - lr*g`` with Nesterov)."""
    if momentums is None:
        foreach.add_(params, grads, alpha=-float(lr))
        return
    foreach.mul_(momentums, momentum)
    foreach.add_(momentums, grads, alpha=-float(lr))
    if nesterov:
        foreach.add_(params, grads, alpha=-float(lr))
        foreach.add_(params, momentums, alpha=momentum)
    else:
        foreach.add_(params, momentums)


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
    foreach.mul_(velocities, rho)
    foreach.add_(velocities, foreach.mul(grads, grads), alpha=1 - rho)
    denominators = foreach.add(velocities, epsilon)
    if average_grads is not None:
        foreach.mul_(average_grads, rho)
        foreach.add_(average_grads, grads, alpha=1 - rho)
        foreach.sub_(denominators, foreach.mul(average_grads, average_grads))
    foreach.sqrt_(denominators)
    if momentums is None:
        step_down(params, grads, denominators, float(lr))
        return
    increments = list(foreach.mul(grads, float(lr)))
    foreach.div_(increments, denominators)
    foreach.mul_(momentums, momentum)
    foreach.add_(momentums, increments)
    foreach.sub_(params, momentums)


def adam(params: TensorList, grads: TensorList, m: TensorList, v: TensorList, v_hat: Optional[TensorList], *,
         lr: Tensor, beta_1: float, beta_2: float, epsilon: float, iteration: int) -> None:  # fmt: skip
    """Adam with Keras's ``alpha = lr*sqrt(1-b2^t)/(1-b1^t)``, ``t = iterations + 1``, eps outside the sqrt."""
    t = f32(iteration + 1)
    alpha = lr * torch.sqrt(1 - f32(beta_2) ** t) / (1 - f32(beta_1) ** t)
    foreach.mul_(m, beta_1)
    foreach.add_(m, grads, alpha=1 - beta_1)
    foreach.mul_(v, beta_2)
    foreach.add_(v, foreach.mul(grads, grads), alpha=1 - beta_2)
    if v_hat is not None:
        foreach.maximum_(v_hat, v)
        v = v_hat
    denominators = foreach.sqrt(v)
    foreach.add_(denominators, epsilon)
    step_down(params, m, denominators, float(alpha))


def adagrad(params: TensorList, grads: TensorList, accumulators: TensorList, *, lr: Tensor, epsilon: float) -> None:
    """``acc += g^2``; ``v -= lr*g / sqrt(acc + eps)``."""
    foreach.add_(accumulators, foreach.mul(grads, grads))
    denominators = foreach.add(accumulators, epsilon)
    foreach.sqrt_(denominators)
    step_down(params, grads, denominators, float(lr))


def adadelta(params: TensorList, grads: TensorList, accumulated_grads: TensorList, accumulated_deltas: TensorList, *,
             lr: Tensor, rho: float, epsilon: float) -> None:  # fmt: skip
    """``delta = -sqrt(E[dx^2] + eps) * g / sqrt(E[g^2] + eps)``; ``v += lr * delta``."""
    foreach.mul_(accumulated_grads, rho)
    foreach.add_(accumulated_grads, foreach.mul(grads, grads), alpha=1 - rho)
    rms_delta = foreach.add(accumulated_deltas, epsilon)
    foreach.sqrt_(rms_delta)
    rms_grad = foreach.add(accumulated_grads, epsilon)
    foreach.sqrt_(rms_grad)
    deltas = foreach.mul(rms_delta, grads)
    foreach.div_(deltas, rms_grad)
    foreach.neg_(deltas)
    foreach.mul_(accumulated_deltas, rho)
    foreach.add_(accumulated_deltas, foreach.mul(deltas, deltas), alpha=1 - rho)
    foreach.add_(params, deltas, alpha=float(lr))


def adamax(params: TensorList, grads: TensorList, m: TensorList, u: TensorList, *, lr: Tensor, beta_1: float,
           beta_2: float, epsilon: float, iteration: int) -> None:  # fmt: skip
    """``u = max(b2*u, |g|)``; ``v -= lr*m / ((1 - b1^t) * (u + eps))``, ``t = iterations + 1``."""
    correction = f32(1.0) - f32(beta_1) ** f32(iteration + 1)
    foreach.mul_(m, beta_1)
    foreach.add_(m, grads, alpha=1 - beta_1)
    foreach.mul_(u, beta_2)
    foreach.maximum_(u, foreach.abs(grads))
    denominators = foreach.add(u, epsilon)
    foreach.mul_(denominators, float(correction))
    step_down(params, m, denominators, float(lr))


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
    foreach.mul_(m, beta_1)
    foreach.add_(m, grads, alpha=1 - beta_1)
    foreach.mul_(v, beta_2)
    foreach.add_(v, foreach.mul(grads, grads), alpha=1 - beta_2)
    m_hat = foreach.mul(m, float(u_next))
    foreach.div_(m_hat, float(f32(1.0) - product_next))
    g_part = foreach.mul(grads, float(f32(1.0) - u_t))
    foreach.div_(g_part, float(f32(1.0) - product))
    foreach.add_(m_hat, g_part)
    denominators = foreach.div(v, float(f32(1.0) - beta_2_power))
    foreach.sqrt_(denominators)
    foreach.add_(denominators, epsilon)
    foreach.mul_(m_hat, float(lr))
    foreach.div_(m_hat, denominators)
    foreach.sub_(params, m_hat)


def ema_update(averages: TensorList, params: TensorList, ema_momentum: float, iteration: int) -> None:
    """``avg = mom*avg + (1-mom)*v`` with ``mom = 0`` at iteration 0 (so the average starts at ``v``)."""
    momentum = f32(ema_momentum) if iteration != 0 else f32(0.0)
    foreach.mul_(averages, float(momentum))
    foreach.add_(averages, params, alpha=float(f32(1.0) - momentum))
