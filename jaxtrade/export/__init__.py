"""Export trained policies to PyTorch `.pth` files and read them back (DESIGN section 5).

`pth`: the file format (a `torch.save`d plain dict that loads with `weights_only=True`), the Flax <-> PyTorch
parameter names and the network configs; `torch_modules`: the PyTorch reference modules that rebuild a policy
from a `.pth` (imported only when used: `jaxtrade.export` imports without PyTorch); `netconfig`: the network configs.
"""

from typing import Any

from jaxtrade.export.pth import (ARCH_ACTOR_CRITIC, ARCH_ENSEMBLE, naming_file, ARCH_MOE, EXPERTS, FORMAT, FORMAT_VERSION, MEMBERS,
                                 TORCH_HINT,
                                 check_observation, check_params, export_pth, infer_obs_dim, load_pth,
                                 network_config, network_from_config, obs_dim_of, params_from_pth,
                                 params_from_state_dict, state_dict_from_params, torch_available)


def torch_policy(path_or_dict) -> Any:
    """The PyTorch reference module of a `.pth` path or its loaded dict (`torch_modules.torch_policy`)."""
    from jaxtrade.export.pth import _import_torch

    _import_torch()  # the install hint, not a bare ImportError, when PyTorch is missing
    from jaxtrade.export import torch_modules

    return torch_modules.torch_policy(path_or_dict)


__all__ = ["ARCH_ACTOR_CRITIC", "ARCH_ENSEMBLE", "ARCH_MOE", "EXPERTS", "FORMAT", "FORMAT_VERSION", "MEMBERS",
           "TORCH_HINT", "check_observation",
           "check_params", "export_pth", "infer_obs_dim", "load_pth", "naming_file", "network_config", "network_from_config",
           "obs_dim_of", "params_from_pth", "params_from_state_dict", "state_dict_from_params", "torch_available",
           "torch_policy"]
