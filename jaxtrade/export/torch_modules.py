"""The PyTorch reference modules of the `.pth` format: `networks.ActorCritic` and `networks.MoEActorCritic`
rebuilt in PyTorch, giving the same action probabilities as the JAX policy. Imports torch (the optional `torch`
extra); `jaxtrade.export.torch_policy` imports this module only when called.

    module = torch_policy("NIFTY_final_model.pth")      # forward(obs [B, D]) -> (logits [B, A], value [B])
    module.action_probs(obs), module.act(obs)           # softmax of the logits, greedy action
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from jaxtrade.errors import InputError
from jaxtrade.export.pth import ARCH_ACTOR_CRITIC, ARCH_ENSEMBLE, ARCH_MOE, _load_raw, _validate, obs_dim_of


def _activation(name: str):
    F = nn.functional
    table = {
        "tanh": torch.tanh,
        "relu": F.relu,
        "gelu": lambda x: F.gelu(x, approximate="tanh"),  # flax.linen.gelu defaults to the tanh approximation
        "elu": F.elu,
        "silu": F.silu,
    }
    if name not in table:
        raise InputError(f"activation {name!r} has no PyTorch equivalent here (choose from {', '.join(table)})")
    return table[name]


class ActorCriticMLP(nn.Module):
    """`networks.ActorCritic` in PyTorch: Linear layers `actor_{i}`, `actor_out`, `critic_{i}`, `critic_out`;
    forward(obs [..., D]) -> (logits [..., A], value [...])."""

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes, activation: str):
        super().__init__()
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.activation = str(activation)
        self._act_fn = _activation(self.activation)
        for head in ("actor", "critic"):
            width = int(obs_dim)
            for i, h in enumerate(self.hidden_sizes):
                setattr(self, f"{head}_{i}", nn.Linear(width, h))
                width = h
            setattr(self, f"{head}_out", nn.Linear(width, int(num_actions) if head == "actor" else 1))

    def forward(self, obs):
        h = obs
        for i in range(len(self.hidden_sizes)):
            h = self._act_fn(getattr(self, f"actor_{i}")(h))
        logits = self.actor_out(h)
        v = obs
        for i in range(len(self.hidden_sizes)):
            v = self._act_fn(getattr(self, f"critic_{i}")(v))
        return logits, self.critic_out(v).squeeze(-1)


class PolicyMixin:
    """`action_probs(obs)` (softmax of the logits) and greedy `act(obs)` on top of forward(obs [B, D] float32)
    -> (logits [B, A], value [B]); `config` is the .pth config."""

    config: dict

    def action_probs(self, obs):
        logits, _ = self(obs)
        return torch.softmax(logits, dim=-1)

    def act(self, obs):
        logits, _ = self(obs)
        return torch.argmax(logits, dim=-1)

    @property
    def obs_names(self) -> list[str]:
        return list((self.config.get("observation") or {}).get("obs_names") or [])


class TorchActorCritic(PolicyMixin, ActorCriticMLP):
    """State-dict names `actor_0.weight`, ..., `critic_out.bias`."""

    def __init__(self, config: dict):
        net = config["network"]
        super().__init__(obs_dim_of(config), int(net["num_actions"]), net.get("hidden_sizes", [64, 64]),
                         net.get("activation", "tanh"))
        self.config = config


class TorchMoEActorCritic(PolicyMixin, nn.Module):
    """`networks.MoEActorCritic` in PyTorch. State-dict names: `gate_0.*`, `gate_out.*`, `experts.{e}.actor_0.*`,
    ..., `experts.{e}.critic_out.*`.

    g = softmax(gate_out(act(gate_0(obs))) / T); logits = log sum_e g_e softmax(logits_e); value = sum_e g_e v_e."""

    def __init__(self, config: dict):
        super().__init__()
        net = config["network"]
        self.config = config
        obs_dim = obs_dim_of(config)
        num_experts = int(net.get("num_experts", 4))
        self.gating_temperature = float(net.get("gating_temperature", 0.8))
        activation = str(net.get("activation", "tanh"))
        self._act_fn = _activation(activation)
        self.gate_0 = nn.Linear(obs_dim, int(net.get("gating_hidden_dim", 64)))
        self.gate_out = nn.Linear(int(net.get("gating_hidden_dim", 64)), num_experts)
        hidden = [int(net.get("expert_hidden_dim", 128))] * int(net.get("expert_num_layers", 2))
        self.experts = nn.ModuleList(ActorCriticMLP(obs_dim, int(net["num_actions"]), hidden, activation)
                                     for _ in range(num_experts))

    def details(self, obs):
        z = self.gate_out(self._act_fn(self.gate_0(obs))) / self.gating_temperature
        gate_probs = torch.softmax(z, dim=-1)
        outs = [expert(obs) for expert in self.experts]
        expert_logits = torch.stack([o[0] for o in outs], dim=-2)  # [..., E, A]
        expert_values = torch.stack([o[1] for o in outs], dim=-1)  # [..., E]
        log_p = torch.log_softmax(expert_logits, dim=-1)
        log_gate = torch.log_softmax(z, dim=-1)
        logits = torch.logsumexp(log_gate.unsqueeze(-1) + log_p, dim=-2)
        value = (gate_probs * expert_values).sum(-1)
        return {"logits": logits, "value": value, "gate_probs": gate_probs, "gate_logits": z,
                "expert_logits": expert_logits, "expert_values": expert_values}

    def forward(self, obs):
        d = self.details(obs)
        return d["logits"], d["value"]


class TorchEnsemble(PolicyMixin, nn.Module):
    """`jaxtrade.ensemble.Ensemble` in PyTorch: `members` (an `nn.ModuleList`, so state-dict names are
    `members.{m}.` + the member's own) acting by the config's rule. forward(obs) -> (scores [..., A], mean value):
    `mean`: scores = log of the mean of the members' softmax probabilities; `vote`: scores = votes + mean
    probability / (2 M), so the most votes win and the mean probability breaks a tie (then the lowest index).
    `action_probs(obs)`: the mean probabilities (`mean`) or the vote shares (`vote`)."""

    def __init__(self, config: dict):
        super().__init__()
        net = config["network"]
        self.config = config
        self.rule = str(net.get("rule", "mean"))
        member = dict(net["member"])
        member_arch = member.get("architecture", ARCH_ACTOR_CRITIC)
        if member_arch not in (ARCH_ACTOR_CRITIC, ARCH_MOE):
            raise InputError(f"ensemble: no PyTorch module for member architecture {member_arch!r}")
        member_config = dict(config, network=dict(member, obs_dim=obs_dim_of(config)))
        self.members = nn.ModuleList(MODULES[member_arch](member_config) for _ in range(int(net["num_members"])))

    def rule_outputs(self, obs):
        outs = [m(obs) for m in self.members]
        logits = torch.stack([o[0] for o in outs])  # [M, ..., A]
        probs = torch.softmax(logits, dim=-1)
        mean_probs = probs.mean(0)
        votes = nn.functional.one_hot(torch.argmax(logits, dim=-1), logits.shape[-1]).to(probs.dtype).sum(0)
        value = torch.stack([o[1] for o in outs]).mean(0)
        return mean_probs, votes, value

    def forward(self, obs):
        mean_probs, votes, value = self.rule_outputs(obs)
        if self.rule == "mean":
            return torch.log(mean_probs), value
        return votes + mean_probs / (2.0 * len(self.members)), value

    def action_probs(self, obs):
        mean_probs, votes, _ = self.rule_outputs(obs)
        return mean_probs if self.rule == "mean" else votes / len(self.members)


MODULES = {ARCH_ACTOR_CRITIC: TorchActorCritic, ARCH_MOE: TorchMoEActorCritic, ARCH_ENSEMBLE: TorchEnsemble}


def torch_policy(path_or_dict) -> Any:
    """A PyTorch `nn.Module` (eval mode, float32, CPU) rebuilt from a jaxtrade `.pth` path or its loaded dict
    (`{"state_dict", "config"}`; tensors or arrays): `forward(obs [B, D]) -> (logits [B, A], value [B])`,
    `action_probs(obs)`, `act(obs)` (greedy), `.config`."""
    if isinstance(path_or_dict, (str, os.PathLike)):
        sd, config = _validate(_load_raw(path_or_dict), str(path_or_dict))
        where = str(path_or_dict)
    else:
        sd, config = _validate(path_or_dict, "torch_policy")
        where = "torch_policy"
    arch = config["network"].get("architecture", ARCH_ACTOR_CRITIC)
    cls = MODULES.get(arch)
    if cls is None:
        raise InputError(f"{where}: no PyTorch module for architecture {arch!r}")
    module = cls(config)
    tensors = {k: torch.as_tensor(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, np.float32))
               for k, v in sd.items()}
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise InputError(f"{where}: state dict does not match its config ({str(e).splitlines()[0]})") from None
    return module.eval()
