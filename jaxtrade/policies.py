"""Policies for the backtester: a pure JAX function `act(key, obs) -> action` with a name.

`obs` is the environment's observation `[D]` (float32, D = `EnvParams.obs_dim`); `action` an int32 scalar in
`[0, 2 * max_lots]`, the target position `action - max_lots` lots. Trained models act greedily (argmax), so a
backtest is deterministic; only the `random` baseline uses `key` (the backtester feeds it a seeded stream).

Baselines by name (`make_baseline`): `flat`, `buy_and_hold`, `random`, `momentum` (`momentum_N` for another
horizon N of `features.RETURN_HORIZONS`). Trained models: `policy_from_logits` (a Flax/JAX apply function),
`torch_policy` (a PyTorch module through `jax.pure_callback`) and `load_policy` (a `.pth` file or an Orbax
directory, through `jaxtrade.export` / `jaxtrade.checkpoints`). Which model a backtest loads (the loading priority)
is `jaxtrade.checkpoints.find_model`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import features as F
from jaxtrade.errors import InputError

ActFn = Callable[[jax.Array, jax.Array], jax.Array]

BASELINES = ("flat", "buy_and_hold", "random", "momentum")
DEFAULT_MOMENTUM_HORIZON = 15


@dataclasses.dataclass(frozen=True)
class Policy:
    """A named, pure `act(key, obs) -> action` (jit-able). `source`: the model file it came from, if any."""

    name: str
    act: ActFn
    source: str | None = None
    description: str = ""
    num_actions: int | None = None  # a trained model's action count (2 * max_lots + 1); None for baselines
    # a trained model's `--env.*` settings (initial_capital, slippage_ticks, ...), when its file records them
    training_env: dict | None = None
    # a trained model's whole config (.pth) or meta (Orbax): feature scaling, symbol, network (jaxtrade.live)
    config: dict | None = dataclasses.field(default=None, compare=False, repr=False)


# ------------------------------------------------------------------------------------------ baselines

@functools.lru_cache(maxsize=64)
def constant(action: int, name: str, description: str = "") -> Policy:
    def act(key, obs):
        del key, obs
        return jnp.int32(action)

    return Policy(name, act, description=description)


def flat(max_lots: int = 1) -> Policy:
    return constant(max_lots, "flat", "never holds a position")


def buy_and_hold(max_lots: int = 1) -> Policy:
    """Always targets long max_lots: the first order of a session fills at its first bar's open (decided at
    the previous session's last close) and the environment squares off at the session's last close unless
    overnight holding is on. (At the split's very first bar the agent only sees that bar's close, so the
    first position fills at the second bar's open.)"""
    return constant(2 * max_lots, "buy_and_hold", f"long {max_lots} lot(s) in every session")


@functools.lru_cache(maxsize=64)
def random_policy(max_lots: int = 1) -> Policy:
    """Uniform over the 2 * max_lots + 1 targets; seeded by the key stream the backtester passes in."""
    def act(key, obs):
        del obs
        return jax.random.randint(key, (), 0, 2 * max_lots + 1, dtype=jnp.int32)

    return Policy("random", act, description="uniformly random target each bar (seeded)")


def momentum(scaler: F.Scaler, max_lots: int = 1, horizon: int = DEFAULT_MOMENTUM_HORIZON) -> Policy:
    """Target sign(log return over the last `horizon` bars) x max_lots, read from the causal feature
    `logret_{horizon}` of the observation and un-scaled with the market's training scaler (the observation
    holds z-scores, whose sign is not the return's)."""
    if horizon not in F.RETURN_HORIZONS:
        raise InputError(f"--policy: momentum horizon must be one of {F.RETURN_HORIZONS}, got {horizon}")
    i = F.FEATURE_NAMES.index(f"logret_{horizon}")
    mean = float(np.asarray(scaler.mean)[i])
    std = float(np.asarray(scaler.std)[i])
    return _momentum(i, float(np.float32((0.0 - mean) / std)), int(max_lots), int(horizon))


@functools.lru_cache(maxsize=64)
def _momentum(i: int, zero_z: float, max_lots: int, horizon: int) -> Policy:
    # The return is (z * std + mean); std > 0, so its sign is the sign of z - z(0), where z(0) is the
    # observation's (float32) value for a zero return: an exactly flat market gives exactly 0.
    def act(key, obs):
        del key
        side = jnp.sign(obs[i] - jnp.float32(zero_z))
        return (max_lots + side * max_lots).astype(jnp.int32)

    name = "momentum" if horizon == DEFAULT_MOMENTUM_HORIZON else f"momentum_{horizon}"
    return Policy(name, act, description=f"sign of the last {horizon}-bar log return")


def is_baseline(name: str) -> bool:
    return name in BASELINES or _momentum_horizon(name) is not None


def _momentum_horizon(name: str) -> int | None:
    if name.startswith("momentum_"):
        try:
            return int(name.split("_", 1)[1])
        except ValueError:
            return None
    return None


def make_baseline(name: str, *, max_lots: int = 1, scaler: F.Scaler | None = None) -> Policy:
    """A baseline by name; `momentum` needs the market's scaler (`market.scaler`)."""
    if name == "flat":
        return flat(max_lots)
    if name == "buy_and_hold":
        return buy_and_hold(max_lots)
    if name == "random":
        return random_policy(max_lots)
    if name == "momentum" or _momentum_horizon(name) is not None:
        if scaler is None:
            raise ValueError("the momentum baseline needs the market's feature scaler")
        return momentum(scaler, max_lots, _momentum_horizon(name) or DEFAULT_MOMENTUM_HORIZON)
    horizons = ", ".join(f"momentum_{h}" for h in F.RETURN_HORIZONS)
    raise InputError(f"--policy: unknown policy {name!r} (choose from {', '.join(BASELINES)}, {horizons})")


# ------------------------------------------------------------------------------------- trained models

def _logits_of(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out


def policy_from_logits(apply_fn: Callable[..., Any], params: Any, name: str, source: str | None = None
                       ) -> Policy:
    """Greedy policy of a network: `apply_fn(params, obs)` returns logits `[A]` (or `(logits, value)`, or a
    distribution with `.logits`); the action is their argmax."""
    def act(key, obs):
        del key
        return jnp.argmax(_logits_of(apply_fn(params, obs)), axis=-1).astype(jnp.int32)

    return Policy(name, act, source=source, description="greedy (argmax) trained policy")


def torch_policy(module: Any, name: str, source: str | None = None) -> Policy:
    """Greedy policy of a PyTorch module (obs `[1, D]` float32 -> logits `[1, A]`, or a tuple/obj whose first
    item / `.logits` is), run on the host through `jax.pure_callback` so it fits inside the jitted scan."""
    import torch  # noqa: F401 - fail here, not inside the callback

    def host_act(obs):
        import torch as _torch
        with _torch.no_grad():
            x = _torch.from_numpy(np.array(obs, np.float32, copy=True)).reshape(-1, np.shape(obs)[-1])
            logits = _logits_of(module(x))
            a = _torch.argmax(logits, dim=-1).cpu().numpy().astype(np.int32)
        return a.reshape(np.shape(obs)[:-1])

    def act(key, obs):
        del key
        return jax.pure_callback(host_act, jax.ShapeDtypeStruct(obs.shape[:-1], jnp.int32), obs,
                                 vmap_method="broadcast_all")

    return Policy(name, act, source=source, description="greedy (argmax) PyTorch policy on the host")


def training_env(config: Any) -> dict | None:
    """The env settings a model trained under: `extra.training_env` of a `.pth` config, `settings.env` of an
    Orbax stage's meta; None for files that do not record them (older exports, foreign files)."""
    if not isinstance(config, dict):
        return None
    env = ((config.get("extra") or {}).get("training_env") or (config.get("settings") or {}).get("env")
           or (config.get("record") or {}).get("training_env"))  # the last: an `experiments.adapt` checkpoint
    return dict(env) if isinstance(env, dict) else None


def model_capital(env: dict | None, given: float, given_explicitly: bool, flag: str) -> tuple[float, str | None]:
    """(capital to run a model at, a line to print or None). A model acts as in training only at its training
    capital (its unrealised-PnL input is a percentage of capital): that one, unless `flag` was given; a
    given capital other than the training one is said."""
    trained = None if not env or env.get("initial_capital") is None else float(env["initial_capital"])
    if trained is None:
        return given, None
    if not given_explicitly:
        return trained, f"initial capital {trained:,.0f}: the model's training capital ({flag} overrides)"
    if trained != given:
        return given, (f"notice: the model trained with initial capital {trained:,.0f}; at {flag} {given:,.0f} "
                       f"its position features are scaled differently, so it will not act as in training")
    return given, None


def _as_policy(obj: Any, name: str, source: str) -> Policy:
    if isinstance(obj, Policy):
        return obj if obj.source else dataclasses.replace(obj, source=source)
    try:
        import torch
        if isinstance(obj, torch.nn.Module):
            obj.eval()
            return torch_policy(obj, name, source)
    except ImportError:
        pass
    if callable(obj):
        config = getattr(obj, "config", None)
        network = config.get("network") if isinstance(config, dict) else None
        num_actions = network.get("num_actions") if isinstance(network, dict) else None
        return Policy(name, obj, source=source, num_actions=None if num_actions is None else int(num_actions),
                      training_env=training_env(config), config=config if isinstance(config, dict) else None)
    raise InputError(f"{source}: the loader returned {type(obj).__name__}, not a policy")


def load_policy(path, **kwargs) -> Policy:
    """Load a trained model as a `Policy`: a `.pth` file through `jaxtrade.export.load_policy`, an Orbax stage
    directory through `jaxtrade.checkpoints.load_policy` (falling back to `jaxtrade.export.load_policy`). The
    loader may return a `Policy`, an `act(key, obs)` function or a `torch.nn.Module`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--model: {p} not found")
    if p.is_file() and p.suffix != ".pth":
        raise InputError(f"--model: {p} is neither a .pth file nor an Orbax checkpoint directory")
    candidates = (["jaxtrade.checkpoints", "jaxtrade.export"] if p.is_dir() else ["jaxtrade.export"])
    loader = None
    for mod_name in candidates:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue
        loader = getattr(mod, "load_policy", None)
        if loader is not None:
            break
    if loader is None:
        raise InputError(f"--model: cannot load {p}: this checkout has no model loader yet "
                         f"({' or '.join(m + '.load_policy' for m in candidates)} is missing); "
                         f"backtest a baseline with --policy instead")
    name = p.name[:-len(".pth")] if p.suffix == ".pth" else p.name
    try:
        obj = loader(p, **kwargs)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is bad input, said in one line
        raise InputError(f"--model: cannot load {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    return _as_policy(obj, name, str(p))
