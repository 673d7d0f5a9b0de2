"""Network configs: a policy network's constructor arguments as plain Python (what `.pth` configs and Orbax stage
metas record under "network") and the Flax module rebuilt from them. `jaxtrade.export.pth` re-exports these."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxtrade import networks as N
from jaxtrade.ensemble import Ensemble
from jaxtrade.errors import InputError
from jaxtrade.jsonio import to_json

ARCH_ACTOR_CRITIC = "actor_critic"
ARCH_MOE = "moe_actor_critic"
ARCH_ENSEMBLE = "ensemble"


def architecture_of(network) -> str:
    if isinstance(network, Ensemble):
        return ARCH_ENSEMBLE
    if isinstance(network, N.MoEActorCritic):
        return ARCH_MOE
    if isinstance(network, N.ActorCritic):
        return ARCH_ACTOR_CRITIC
    raise TypeError(f"cannot export a {type(network).__name__}: only ActorCritic, MoEActorCritic and Ensemble are "
                    f"supported")


def _module_fields(network) -> dict:
    skip = {"parent", "name"}
    return {f.name: getattr(network, f.name) for f in dataclasses.fields(network)
            if f.init and f.name not in skip}


def network_config(network, obs_dim: int | None = None) -> dict:
    """The network's constructor arguments as plain Python, plus `architecture` (and `obs_dim` when given).

    Keys (also what the Orbax stage meta must hold under "network"; write it with this function):
      actor_critic:      architecture="actor_critic", num_actions (int), hidden_sizes (list of int),
                         activation (str), obs_dim (int)
      moe_actor_critic:  architecture="moe_actor_critic", num_actions, num_experts, expert_hidden_dim,
                         gating_hidden_dim (int), gating_temperature (float), activation (str),
                         expert_num_layers (int), obs_dim (int)
      ensemble:          architecture="ensemble", num_members (int), rule ("mean" | "vote"), num_actions,
                         member (the members' own network config, one of the two above), obs_dim
    i.e. every constructor field of the module. `obs_dim` is optional for `network_from_config` (it is inferred
    from the parameters) but should be written; missing fields take the module's defaults; unknown ones are an
    error.
    """
    arch = architecture_of(network)
    cfg: dict[str, Any] = {"architecture": arch}
    if arch == ARCH_ENSEMBLE:
        cfg.update(num_members=int(network.num_members), rule=str(network.rule), num_actions=network.num_actions,
                   member=network_config(network.member))
    else:
        cfg.update(to_json(_module_fields(network), "network"))
    if obs_dim is not None:
        cfg["obs_dim"] = int(obs_dim)
    return cfg


def network_from_config(config: Mapping) -> Any:
    """Rebuild the Flax module (or `Ensemble`) from `network_config`'s dict (or a whole .pth config / Orbax meta
    holding it under "network"). Unknown keys other than `architecture` and `obs_dim` are an error, so a config
    written by a newer network does not silently build a different one."""
    if "network" in config and isinstance(config["network"], Mapping):
        config = config["network"]
    arch = config.get("architecture", ARCH_ACTOR_CRITIC)
    if arch == ARCH_ENSEMBLE:
        unknown = sorted(set(config) - {"architecture", "obs_dim", "num_members", "rule", "num_actions", "member"})
        if unknown or not isinstance(config.get("member"), Mapping):
            raise InputError(f"network config: an ensemble needs 'member' (a network config), 'num_members' and "
                             f"'rule'{'; unknown ' + ', '.join(map(repr, unknown)) if unknown else ''}")
        member = network_from_config(config["member"])
        if isinstance(member, Ensemble):
            raise InputError("network config: an ensemble's members cannot be ensembles")
        try:
            return Ensemble(member, int(config.get("num_members", 0)), str(config.get("rule", "mean")))
        except ValueError as e:
            raise InputError(f"network config: {e}") from None
    if arch == ARCH_ACTOR_CRITIC:
        cls = N.ActorCritic
    elif arch == ARCH_MOE:
        cls = N.MoEActorCritic
    else:
        raise InputError(f"unknown network architecture {arch!r} (expected {ARCH_ACTOR_CRITIC!r}, {ARCH_MOE!r} or "
                         f"{ARCH_ENSEMBLE!r})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
    kwargs = {}
    for k, v in config.items():
        if k in ("architecture", "obs_dim"):
            continue
        if k not in fields:
            raise InputError(f"network config: {cls.__name__} has no field {k!r}")
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    if "num_actions" not in kwargs:
        raise InputError("network config: 'num_actions' is missing")
    return cls(**kwargs)
