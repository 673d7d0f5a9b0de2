"""Policies for the backtester: a pure JAX function `act(key, obs) -> action` with a name.

`obs` is the environment's observation `[D]` (float32, D = `EnvParams.obs_dim`); `action` an int32 scalar in
`[0, 2 * max_lots]`, the target position `action - max_lots` lots. Trained models act greedily (argmax), so a
backtest is deterministic; only the `random` baseline uses `key` (the backtester feeds it a seeded stream).

Baselines by name (`make_baseline`): `flat`, `buy_and_hold`, `random`, `momentum` (`momentum_N` for another
horizon N of `features.RETURN_HORIZONS`). Trained models: `policy_from_logits` (a Flax/JAX apply function),
`network_policy` (a Flax network), `torch_policy` (a PyTorch module through `jax.pure_callback`) and the one
model loader, `load_model` / `load_policy` (a `.pth` file or an Orbax stage directory, through `jaxtrade.export`
/ `jaxtrade.checkpoints`). Which model a backtest loads (the loading priority) is
`jaxtrade.checkpoints.find_model`. A trained model runs under the market rules it trained with:
`model_env_config` reads them from its file and `rules_for_model` applies the command line's overrides, each
said once.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import features as F
from jaxtrade.env import EnvConfig
from jaxtrade.errors import InputError

ActFn = Callable[[jax.Array, jax.Array], jax.Array]

BASELINES = ("flat", "buy_and_hold", "random", "momentum")
DEFAULT_MOMENTUM_HORIZON = 15


@dataclasses.dataclass(frozen=True, eq=False)
class BoundAct:
    """`fn(params, key, obs) -> action` with its parameters, callable as `act(key, obs)`. The backtester compiles
    once per `fn` (hashable: give it a value-hashable callable such as `Greedy(network)`) and passes `params` as
    arguments, so another model of the same architecture reuses the compiled program."""

    fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    params: Any = None

    def __call__(self, key, obs):
        return self.fn(self.params, key, obs)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A named, pure `act(key, obs) -> action` (jit-able). `source`: the model file it came from, if any."""

    name: str
    act: ActFn
    source: str | None = None
    description: str = ""
    num_actions: int | None = None  # a trained model's action count (2 * max_lots + 1); None for baselines
    env_config: EnvConfig | None = None  # the market rules a trained model trained under, when its file says
    # a trained model's whole config (.pth) or meta (Orbax): feature scaling, symbol, network (jaxtrade.live)
    config: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)


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


@dataclasses.dataclass(frozen=True)
class Greedy:
    """The argmax action of a network's logits, `Greedy(network)(params, key, obs)`: equal (and hashable) for
    networks of one architecture, so the backtester compiles once for all of them."""

    network: Any

    def __call__(self, params, key, obs):
        del key
        return jnp.argmax(_logits_of(self.network.apply(params, obs)), axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _GreedyApply:
    apply_fn: Callable[..., Any]

    def __call__(self, params, key, obs):
        del key
        return jnp.argmax(_logits_of(self.apply_fn(params, obs)), axis=-1).astype(jnp.int32)


def network_policy(network, params: Any, name: str, source: str | None = None,
                   env_config: EnvConfig | None = None, config: Mapping[str, Any] | None = None) -> Policy:
    """Greedy policy of a Flax network (`network.apply(params, obs)` -> `(logits, value)`)."""
    params = jax.tree.map(jnp.asarray, params)
    return Policy(name, BoundAct(Greedy(network), params), source=source, description="greedy (argmax) trained policy",
                  num_actions=getattr(network, "num_actions", None), env_config=env_config, config=config)


def policy_from_logits(apply_fn: Callable[..., Any], params: Any, name: str, source: str | None = None
                       ) -> Policy:
    """Greedy policy of any apply function: `apply_fn(params, obs)` returns logits `[A]` (or `(logits, value)`,
    or a distribution with `.logits`); the action is their argmax."""
    return Policy(name, BoundAct(_GreedyApply(apply_fn), params), source=source,
                  description="greedy (argmax) trained policy")


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


def model_env_config(config: Any, where: str = "model") -> EnvConfig | None:
    """The `EnvConfig` a model trained under: "env_config" of a `.pth` config or an Orbax stage's meta (older
    files: `extra.training_env`, `settings.env`, an `experiments.adapt` checkpoint's `record.training_env`);
    None when the file records none."""
    if not isinstance(config, Mapping):
        return None
    env = (config.get("env_config") or (config.get("extra") or {}).get("training_env")
           or (config.get("settings") or {}).get("env") or (config.get("record") or {}).get("training_env"))
    return EnvConfig.from_dict(env, f"{where}: env_config") if isinstance(env, Mapping) else None


def rules_for_model(recorded: EnvConfig | None, base: EnvConfig, given: Mapping[str, Any],
                    flag_of: Callable[[str], str]) -> tuple[EnvConfig, list[str]]:
    """(the market rules to run a model under, lines to print).

    A model runs under the rules it trained with (`recorded`, from its file); every setting given on the command
    line (`given`: field -> value, the flags the user typed) overrides its own and prints one notice naming the
    setting (`flag_of(field)` is the command's spelling). Without a recorded config: `base` with `given`."""
    if recorded is None:
        return base.replace(**given), []
    lines = [f"market rules: the model's own ({recorded.describe()}); flags override them"]
    for field, value in given.items():
        trained = getattr(recorded, field)
        if value == trained:
            continue
        why = ("its position features are scaled by capital, so it will not act as in training"
               if field == "initial_capital" else "it is not judged under the rules it trained with")
        lines.append(f"notice: {flag_of(field)} {_show(value)} overrides the model's {field} {_show(trained)}: {why}")
    return recorded.replace(**given), lines


def _show(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    return repr(value) if value == "" else str(value)


# --------------------------------------------------------------------------------- the one model loader

@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A trained model: flax variables, the Flax module, and the file's config (a `.pth` config or an Orbax
    stage's meta: network, observation, scaler, metrics, "env_config", ...)."""

    params: Any
    network: Any
    config: Mapping[str, Any]
    source: str

    @property
    def env_config(self) -> EnvConfig | None:
        return model_env_config(self.config, self.source)


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"--model: {p} not found")
    if p.is_file() and p.suffix != ".pth":
        raise InputError(f"--model: {p} is neither a .pth file nor an Orbax checkpoint directory")
    return p


def load_model(path, *, step: int | None = None, obs_names=None) -> LoadedModel:
    """The one loader: a jaxtrade `.pth` file, or an Orbax stage directory `checkpoints/{run}/{symbol}/{stage}`
    (its latest step, or `step`) whose meta holds the network config under "network". `obs_names`: when given,
    the model's recorded observation names must match them."""
    from jaxtrade import export

    p = _check_path(path)
    if p.is_dir():
        with export.naming_file(p):
            return _load_orbax(p, step, obs_names)
    params, network, config = export.params_from_pth(p)
    if obs_names is not None:
        export.check_observation(config, obs_names, str(p))
    return LoadedModel(jax.tree.map(jnp.asarray, params), network, config, str(p))


def _load_orbax(p, step, obs_names) -> LoadedModel:
    """An Orbax stage directory: the policy parameters and the network config its meta records."""
    from jaxtrade import checkpoints, export

    params, meta = checkpoints.restore_params(p, step)
    if not isinstance(meta.get("network"), Mapping):
        raise InputError(f"--model: {p}: checkpoint meta has no 'network' entry (the network config); cannot "
                         f"rebuild the policy")
    network = export.network_from_config(meta["network"])
    params = {"params": params["params"] if isinstance(params, Mapping) and set(params) == {"params"} else params}
    obs_dim = meta["network"].get("obs_dim") or (meta.get("observation") or {}).get("obs_dim")
    export.check_params(params, network, int(obs_dim or export.infer_obs_dim(params)))
    config = dict(meta)
    if obs_names is not None:
        export.check_observation(config, obs_names, str(p))
    return LoadedModel(jax.tree.map(jnp.asarray, params), network, config, str(p))


def load_policy(path, *, backend: str = "torch", step: int | None = None, obs_names=None) -> Policy:
    """A trained model as a greedy `Policy` (with its `config` and recorded `env_config`). A `.pth` runs its
    PyTorch module on the host through `jax.pure_callback` (`backend="torch"`, the file as users will run it)
    or the rebuilt Flax network (`backend="jax"`, ~10x faster in a backtest); an Orbax directory always runs
    in JAX."""
    if backend not in ("torch", "jax"):
        raise ValueError(f"load_policy: backend must be 'torch' or 'jax', got {backend!r}")
    p = _check_path(path)
    name = p.stem if p.suffix == ".pth" else f"{p.parent.name}_{p.name}"
    try:
        if p.is_file() and backend == "torch":
            from jaxtrade import export

            module = export.torch_policy(p)
            if obs_names is not None:
                export.check_observation(module.config, obs_names, str(p))
            config = dict(module.config)
            return dataclasses.replace(torch_policy(module, name, str(p)),
                                       num_actions=int(config["network"]["num_actions"]),
                                       env_config=model_env_config(config, str(p)), config=config)
        model = load_model(p, step=step, obs_names=obs_names)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is bad input, said in one line
        raise InputError(f"--model: cannot load {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    return network_policy(model.network, model.params, name, str(p), model.env_config, model.config)
