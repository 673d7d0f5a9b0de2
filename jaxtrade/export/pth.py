"""The `.pth` format (DESIGN section 5): export trained policies to PyTorch files and read them back.

A `.pth` file is `torch.save` of a plain dict that loads with `torch.load(f, weights_only=True)`:

    {"state_dict": {name: float32 tensor},
     "config": {"format": "jaxtrade.pth", "format_version": 1, "jaxtrade_version": "0.1.0",
                "architecture": "actor_critic" | "moe_actor_critic" | "ensemble",
                "network": {...},                        # see `network_config` (the same dict the Orbax meta holds)
                "observation": {"obs_names": [...], "obs_dim": D},
                "scaler": Scaler.to_dict() or None,      # feature scaling (observations are already scaled)
                "symbol": str, "stage": str, "metrics": {...}, "extra": {...},
                "env_config": {...} or None}}                # EnvConfig.to_dict(): the market rules it trained under

Everything in `config` is plain Python (str, int, float, bool, None, list, dict with str keys).

State-dict names mirror the Flax parameter names, one `nn.Linear` per `nn.Dense`: `actor_0.weight`,
`actor_0.bias`, ..., `actor_out.weight`, `critic_0.weight`, ..., `critic_out.bias`; `weight` is the Flax
`kernel` transposed (`[out, in]`). The mixture of experts keeps the gating MLP's Flax names (`gate_0.weight`,
`gate_0.bias`, `gate_out.weight`, `gate_out.bias`) and unstacks the experts (stacked on a leading expert axis
in Flax, `experts/actor_0/kernel [E, in, out]`) into one sub-module per expert: `experts.{e}.actor_0.weight`,
..., `experts.{e}.critic_out.bias`. The rule in one line: Flax path joined by ".", `experts` index inserted.
An ensemble (`jaxtrade.ensemble.Ensemble`, parameters stacked on a leading member axis) holds every member, each
under its own prefix: `members.{m}.` + the member's names (`members.0.actor_0.weight`, ...,
`members.3.experts.1.critic_out.bias`). All tensors are float32.

Entry points (this module: the format; `torch_modules`: the PyTorch reference modules):
    export_pth(path, params, network, *, symbol, stage, obs_names, scaler=None, metrics=None, extra=None,
               env_config=None)
    load_pth(path) -> (state_dict {name: np.ndarray}, config)
    params_from_pth(path) -> (flax variables {"params": ...}, flax module, config)
    network_config(network) -> dict / network_from_config(config) -> flax module   (`netconfig`)
Loading a model as a policy (a `.pth` or an Orbax stage directory) is `jaxtrade.policies.load_model` /
`load_policy`, the one loader. PyTorch is imported lazily: `jaxtrade` (and this module) import without it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import atomic
from jaxtrade.ensemble import Ensemble
from jaxtrade.errors import InputError
from jaxtrade.export.netconfig import (ARCH_ACTOR_CRITIC, ARCH_ENSEMBLE, ARCH_MOE, architecture_of,  # noqa: F401
                                       network_config, network_from_config)
from jaxtrade.jsonio import to_json

FORMAT = "jaxtrade.pth"
FORMAT_VERSION = 1
TORCH_HINT = "pip install torch==2.13.0"


def _jaxtrade_version() -> str:
    try:
        from importlib.metadata import version
        return version("jaxtrade")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def torch_available() -> bool:
    """Whether PyTorch (the optional `torch` extra) can be imported."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _import_torch():
    try:
        import torch
    except ImportError:
        raise InputError(f"PyTorch is needed to read or write .pth files: {TORCH_HINT}") from None
    return torch


# ------------------------------------------------------------------------------------- params <-> state dict

def _unwrap(params) -> dict:
    """The inner parameter dict of flax variables `{"params": {...}}` (or the dict itself)."""
    params = jax.tree.map(np.asarray, params)
    if isinstance(params, Mapping) and set(params.keys()) == {"params"}:
        params = params["params"]
    return {k: v for k, v in params.items()}


def _flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _dense_to_torch(path: tuple, leaf: np.ndarray) -> tuple[str, np.ndarray]:
    """One Flax Dense leaf -> (PyTorch name, array): `kernel [in, out]` -> `weight [out, in]`."""
    *mods, kind = path
    if kind == "kernel":
        return ".".join(mods + ["weight"]), np.swapaxes(leaf, -1, -2)
    if kind == "bias":
        return ".".join(mods + ["bias"]), leaf
    raise ValueError(f"unexpected parameter {'/'.join(path)} (only Dense kernel/bias are exported)")


def _torch_to_dense(name: str, arr: np.ndarray) -> tuple[tuple, np.ndarray]:
    *mods, kind = name.split(".")
    if kind == "weight":
        return tuple(mods) + ("kernel",), np.swapaxes(arr, -1, -2)
    if kind == "bias":
        return tuple(mods) + ("bias",), arr
    raise InputError(f"unexpected state-dict entry {name!r}")


EXPERTS = "experts"  # the Flax sub-tree whose parameters are stacked on a leading expert axis


MEMBERS = "members"  # an ensemble's members, each under `members.{m}.`


def state_dict_from_params(params, network=None) -> dict[str, np.ndarray]:
    """Flax parameters (`{"params": ...}` or the inner dict) -> {PyTorch name: float32 array}.

    Names are the Flax module path joined by "." plus `weight` (kernel transposed) or `bias`; the stacked
    `experts` sub-tree of the mixture of experts is unstacked: `experts/actor_0/kernel[e]` ->
    `experts.{e}.actor_0.weight`. An `Ensemble` `network` (stacked members) gives `members.{m}.` + member m's
    names."""
    if isinstance(network, Ensemble):
        params = jax.tree.map(np.asarray, params)
        return {f"{MEMBERS}.{m}.{k}": v for m in range(network.num_members)
                for k, v in state_dict_from_params(jax.tree.map(lambda x: x[m], params)).items()}
    out: dict[str, np.ndarray] = {}
    for path, leaf in _flatten(_unwrap(params)).items():
        if path[0] == EXPERTS:
            for e in range(leaf.shape[0]):
                name, arr = _dense_to_torch((EXPERTS, str(e)) + path[1:], leaf[e])
                out[name] = arr
        else:
            name, arr = _dense_to_torch(path, leaf)
            out[name] = arr
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def params_from_state_dict(state_dict: Mapping[str, Any], config: Mapping | None = None) -> dict:
    """Inverse of `state_dict_from_params`: -> flax variables `{"params": {...}}` of float32 numpy arrays (for an
    ensemble, the members' stacked on a leading axis). `config` is accepted for symmetry; the names carry the
    structure."""
    del config
    if any(str(k).startswith(MEMBERS + ".") for k in state_dict):
        by_member: dict[int, dict] = {}
        for name, value in state_dict.items():
            head, m, rest = (str(name).split(".", 2) + ["", ""])[:3]
            if head != MEMBERS or not m.isdigit() or not rest:
                raise InputError(f"unexpected state-dict entry {name!r} in an ensemble (expected members.{{m}}.<name>)")
            by_member.setdefault(int(m), {})[rest] = value
        if sorted(by_member) != list(range(len(by_member))):
            raise InputError(f"state dict: ensemble members {sorted(by_member)} are not 0..M-1")
        members = [params_from_state_dict(by_member[m]) for m in range(len(by_member))]
        if len({jax.tree.structure(p) for p in members}) != 1:
            raise InputError("state dict: the ensemble's members do not share one architecture")
        return jax.tree.map(lambda *xs: np.stack(xs), *members)
    tree: dict = {}
    stacked: dict[tuple, dict[int, np.ndarray]] = {}
    for name, value in state_dict.items():
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float32)
        parts = name.split(".")
        if parts[0] == EXPERTS:
            if len(parts) < 3 or not parts[1].isdigit():
                raise InputError(f"unexpected state-dict entry {name!r} (expected experts.{{e}}.<layer>.<param>)")
            path, leaf = _torch_to_dense(".".join(parts[2:]), arr)
            stacked.setdefault((EXPERTS,) + path, {})[int(parts[1])] = leaf
        else:
            path, leaf = _torch_to_dense(name, arr)
            _set(tree, path, leaf)
    for path, by_expert in stacked.items():
        if sorted(by_expert) != list(range(len(by_expert))):
            raise InputError(f"state dict: experts {sorted(by_expert)} for {'.'.join(path)} are not 0..E-1")
        _set(tree, path, np.stack([by_expert[e] for e in range(len(by_expert))]))
    return {"params": tree}


def check_params(params, network, obs_dim: int) -> None:
    """Apply the network to a dummy observation: the parameters must fit its structure and `obs_dim`."""
    try:
        ref = jax.eval_shape(network.init, jax.random.key(0), jax.ShapeDtypeStruct((1, obs_dim), jnp.float32))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"network config cannot build a network: {type(e).__name__}: {e}") from None
    want = {"/".join(p): tuple(v.shape) for p, v in _flatten(_unwrap_abstract(ref)).items()}
    got = {"/".join(p): tuple(np.shape(v)) for p, v in _flatten(_unwrap(params)).items()}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        detail = "; ".join(s for s in (f"missing {missing[:3]}" if missing else "",
                                       f"unexpected {extra[:3]}" if extra else "",
                                       f"shape mismatch {[(k, got[k], want[k]) for k in wrong[:3]]}" if wrong
                                       else "") if s)
        raise InputError(f"parameters do not match the network config ({detail})")


def _unwrap_abstract(variables) -> dict:
    if isinstance(variables, Mapping) and "params" in variables:
        return dict(variables["params"])
    return dict(variables)


def infer_obs_dim(params) -> int:
    """Input width of the network: the first layer's kernel (`gate_0`, `actor_0` or `actor_out`; `[..., in, out]`,
    an ensemble's with a leading member axis)."""
    inner = _unwrap(params)
    for first in ("gate_0", "actor_0", "actor_out"):
        if first in inner:
            return int(np.shape(inner[first]["kernel"])[-2])
    raise InputError(f"cannot tell the observation size from parameters {sorted(inner)}")


# ------------------------------------------------------------------------------------- writing

def export_pth(path, params, network, *, symbol: str, stage: str, obs_names, scaler=None, metrics=None,
               extra=None, env_config=None) -> Path:
    """Write `params` of `network` (an `ActorCritic` or `MoEActorCritic`) as a jaxtrade `.pth` file, atomically
    (`jaxtrade.atomic`: a temporary file in the same directory, then renamed). `scaler`: a `features.Scaler` or its dict;
    `metrics`, `extra`: dicts of plain values (numpy / JAX scalars and arrays are converted); `env_config`: the
    market rules it trained under (`EnvConfig.to_dict()`), which backtests and adaptation default to. Returns
    the path."""
    torch = _import_torch()
    path = Path(path)
    obs_names = [str(n) for n in obs_names]
    obs_dim = len(obs_names)
    got_dim = infer_obs_dim(params)
    if got_dim != obs_dim:
        raise ValueError(f"export_pth: the network takes {got_dim} inputs but obs_names has {obs_dim}")
    check_params(params, network, obs_dim)
    net_cfg = network_config(network, obs_dim=obs_dim)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxtrade_version": _jaxtrade_version(),
        "architecture": net_cfg["architecture"],
        "network": net_cfg,
        "observation": {"obs_names": obs_names, "obs_dim": obs_dim},
        "scaler": to_json(scaler, "scaler"),
        "symbol": str(symbol),
        "stage": str(stage),
        "metrics": to_json(metrics or {}, "metrics"),
        "extra": to_json(extra or {}, "extra"),
        "env_config": to_json(env_config, "env_config"),
    }
    sd = state_dict_from_params(params, network)
    payload = {"state_dict": {k: torch.from_numpy(v.copy()) for k, v in sd.items()}, "config": config}
    atomic.torch_save(payload, path)
    return path


# ------------------------------------------------------------------------------------- reading

def _validate(obj, where: str) -> tuple[dict, dict]:
    if not (isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
            and isinstance(obj.get("config"), Mapping)):
        raise InputError(f"{where}: not a jaxtrade .pth file (expected a dict with 'state_dict' and 'config')")
    config = dict(obj["config"])
    if config.get("format") != FORMAT:
        raise InputError(f"{where}: not a jaxtrade .pth file (config format is {config.get('format')!r}, "
                         f"expected {FORMAT!r})")
    version = config.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise InputError(f"{where}: .pth format version {version!r} is newer than this jaxtrade reads "
                         f"({FORMAT_VERSION}); upgrade jaxtrade")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise InputError(f"{where}: unknown .pth format version {version!r} (this jaxtrade reads versions 1 to "
                         f"{FORMAT_VERSION})")
    if not isinstance(config.get("network"), Mapping):
        raise InputError(f"{where}: jaxtrade .pth config has no 'network' entry")
    return dict(obj["state_dict"]), config


def _load_raw(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected a jaxtrade .pth file)")
    torch = _import_torch()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is bad input
        if "weights only load failed" in str(e).lower():
            why = "it holds Python objects that torch.load(weights_only=True) refuses to unpickle"
        else:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            why = f"torch.load failed: {type(e).__name__}: {first[:200]}"
        raise InputError(f"{path}: not a jaxtrade .pth file ({why})") from None


def load_pth(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a jaxtrade `.pth` file -> (state dict as float32 numpy arrays, config)."""
    sd, config = _validate(_load_raw(path), str(path))
    out = {}
    for k, v in sd.items():
        try:
            out[str(k)] = v.detach().cpu().numpy().astype(np.float32) if hasattr(v, "detach") \
                else np.asarray(v, np.float32)
        except Exception:  # noqa: BLE001
            raise InputError(f"{path}: state-dict entry {k!r} is not a tensor") from None
    return out, config


def params_from_pth(path) -> tuple[dict, Any, dict]:
    """Rebuild the JAX side of a `.pth`: (flax variables `{"params": ...}` as jnp arrays, flax module, config).
    `network.apply(variables, obs)` then gives `(logits, value)` as the exported policy did."""
    sd, config = load_pth(path)
    with naming_file(path):
        network = network_from_config(config)
        params = params_from_state_dict(sd, config)
        check_params(params, network, obs_dim_of(config))
    return jax.tree.map(jnp.asarray, params), network, config


@contextlib.contextmanager
def naming_file(path):
    """An `InputError` raised inside names `path` (a model that does not fit says which file)."""
    try:
        yield
    except InputError as e:
        if str(path) in str(e):
            raise
        raise InputError(f"{path}: {e}") from None


def obs_dim_of(config: Mapping) -> int:
    dim = (config.get("observation") or {}).get("obs_dim") or (config.get("network") or {}).get("obs_dim")
    if dim is None:
        raise InputError("model config has no observation size (observation.obs_dim)")
    return int(dim)


def check_observation(config: Mapping, obs_names, where: str = "model") -> None:
    """InputError unless the model was trained on observations `obs_names` (when its config says)."""
    want = (config.get("observation") or {}).get("obs_names")
    if want is None:
        return
    if list(want) != list(obs_names):
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(want, obs_names)) if a != b][:2]
        raise InputError(f"{where}: the model expects {len(want)} observations {diff or ''} but the environment "
                         f"gives {len(obs_names)}; retrain or export it for this observation layout")
