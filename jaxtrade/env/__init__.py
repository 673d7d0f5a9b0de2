"""The trading environment (DESIGN section 3), gymnax-style pure functions over `flax.struct` dataclasses:

    params = env_params(EnvConfig(...), market, "train")     # the ONE path from settings to market rules
    obs, state = reset(key, params)
    obs, state, reward, done, info = step(key, state, action, params)

`params.py`: `EnvConfig`, `env_params`, `EnvParams` and the low-level `make_params`; `step.py`: `EnvState`,
`reset`, `step` (timing, money and square-off rules in its docstring).
"""

from jaxtrade.env.params import (LAST_BAR, MUST_BE_FLAT, OBS_NAMES, POSITION_FEATURES, EnvConfig, EnvParams,
                                 cost_model_for, env_params, make_params, market_for, parse_square_off_time,
                                 stack_params)
from jaxtrade.env.step import EnvState, reset, reset_to, step

__all__ = ["LAST_BAR", "MUST_BE_FLAT", "OBS_NAMES", "POSITION_FEATURES", "EnvConfig", "EnvParams", "EnvState",
           "cost_model_for", "env_params", "make_params", "market_for", "parse_square_off_time", "reset",
           "reset_to", "stack_params", "step"]
