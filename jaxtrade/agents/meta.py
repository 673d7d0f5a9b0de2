"""The loss-agnostic MAML core (Finn et al. 2017): inner adaptation in a `lax.scan` and the grad-of-grad
meta-gradient. The same code meta-learns a trading policy (`agents.maml`) and the sinusoid regression of the
paper (tests).

    adapted, inner_losses = adapt(params, task, inner_loss_fn, inner_lr, inner_steps)
    loss, grads, aux = maml_step(meta_params, tasks, inner_loss_fn, outer_loss_fn, inner_lr, inner_steps,
                                 first_order=False)

`inner_loss_fn(params, task) -> scalar`; `outer_loss_fn(adapted_params, task) -> scalar` (or `(scalar, aux)`
with `has_aux=True`); `tasks` is a pytree with a leading task axis (`vmap`ped). The inner loop is
`inner_steps` plain SGD steps in a `lax.scan` (each step under `jax.checkpoint` when `remat`: memory about
constant in the number of steps), and the meta-loss is differentiated through it: `jax.grad` of a function
that itself calls `jax.grad` (second order). `first_order=True` wraps the inner gradients in
`jax.lax.stop_gradient` (first-order MAML). `inner_lr` may be a traced hyperparameter.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax


def _clip_tree(g, max_norm):
    norm = optax.global_norm(g)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
    return jax.tree.map(lambda x: x * scale.astype(x.dtype), g)


def adapt(params, task, inner_loss_fn: Callable, inner_lr, inner_steps: int, *, first_order: bool = False,
          remat: bool = True, inner_grad_clip: float | None = None, return_trajectory: bool = False):
    """`inner_steps` SGD steps `p <- p - inner_lr * grad inner_loss_fn(p, task)` from `params` in a `lax.scan`.

    Differentiable in `params` (second order) unless `first_order`, which stops the gradient through the inner
    gradients (d adapted / d params = identity). Returns (adapted params, inner losses `[inner_steps]` before
    each step), and with `return_trajectory` also the parameters after each step (leading axis inner_steps)."""
    grad_fn = jax.value_and_grad(inner_loss_fn)

    def step(p, _):
        loss, g = grad_fn(p, task)
        if first_order:
            g = jax.lax.stop_gradient(g)
        if inner_grad_clip:
            g = _clip_tree(g, inner_grad_clip)
        p = jax.tree.map(lambda x, gx: x - jnp.asarray(inner_lr, x.dtype) * gx, p, g)
        return p, ((loss, p) if return_trajectory else (loss, None))

    if remat:
        step = jax.checkpoint(step)
    adapted, (losses, traj) = jax.lax.scan(step, params, None, length=int(inner_steps))
    if return_trajectory:
        return adapted, losses, traj
    return adapted, losses


def maml_loss(meta_params, tasks, inner_loss_fn: Callable, outer_loss_fn: Callable, inner_lr, inner_steps: int,
              first_order: bool = False, *, remat: bool = True, has_aux: bool = False,
              inner_grad_clip: float | None = None):
    """Mean over tasks (leading axis of `tasks`, `vmap`) of `outer_loss_fn(adapt(meta_params, task), task)`.
    Returns (loss, aux) with aux = {outer aux..., "task_loss" [tasks], "inner_loss" [tasks, inner_steps]}."""
    def one(task):
        adapted, inner_losses = adapt(meta_params, task, inner_loss_fn, inner_lr, inner_steps,
                                      first_order=first_order, remat=remat, inner_grad_clip=inner_grad_clip)
        out = outer_loss_fn(adapted, task)
        loss, aux = out if has_aux else (out, {})
        return loss, dict(aux, inner_loss=inner_losses)

    losses, aux = jax.vmap(one)(tasks)
    aux = dict(aux, task_loss=losses)
    return losses.mean(), aux


def maml_step(meta_params, tasks, inner_loss_fn: Callable, outer_loss_fn: Callable, inner_lr, inner_steps: int,
              first_order: bool = False, *, remat: bool = True, has_aux: bool = False,
              inner_grad_clip: float | None = None):
    """(meta loss, meta-gradient, aux): `jax.value_and_grad` of `maml_loss` (whose inner loop calls
    `jax.grad`). Any losses: `inner_loss_fn(params, task) -> scalar`, `outer_loss_fn(adapted, task) -> scalar`
    (or `(scalar, aux)` with `has_aux`). Apply the gradient with any Optax optimiser."""
    fn = functools.partial(maml_loss, inner_loss_fn=inner_loss_fn, outer_loss_fn=outer_loss_fn,
                           inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order, remat=remat,
                           has_aux=has_aux, inner_grad_clip=inner_grad_clip)
    (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(meta_params, tasks)
    return loss, grads, aux
