"""Stable-Baselines3 PPO on jaxtrade's own market, for `bench all --vs_sb3` (needs the `bench` extra:
`pip install -e '.[bench,torch]'`).

Both learners see the same market: the wrappers step jaxtrade's `env.reset` / `env.step` (jitted) with the
same `EnvParams`, so the observations, fills, costs and rewards are jaxtrade's.

    JaxtradeGymEnv(env_params)             a gymnasium.Env: one episode at a time (for any gymnasium user)
    make_vec_env(env_params, num_envs)      an SB3 VecEnv stepping all envs in one jitted, vmapped call
    compare(ppo_config, env_params, ...)    SB3 PPO with the same settings, timed; lines for the suite

SB3 runs twice per config: on the batched VecEnv, where its env costs one call per step for all envs, so the
ratio compares the two learners; and on SB3's usual setup, a DummyVecEnv of single gymnasium envs (one jitted
`env.step` call per env and step), the env loop an SB3 user's market wrapper would have. Each line reports
its wrapper's own random-action rate beside SB3's. Episodes end at the session's close; that is a true end (jaxtrade's GAE
does not bootstrap across it), so the VecEnv reports `terminal_observation` without `TimeLimit.truncated`.
"""

from __future__ import annotations

import math
import statistics
import time

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from jaxtrade import env as E

RATIO_BAR = 120.0  # issue 13: PPO end-to-end at least 120x Stable-Baselines3 on a 2-core CPU


def _spaces(env_params):
    obs = spaces.Box(-np.inf, np.inf, (int(env_params.obs_dim),), np.float32)
    return obs, spaces.Discrete(int(env_params.num_actions))


# One jitted call per reset and per step, the key folded inside (a gymnasium loop pays one dispatch a step),
# shared by every JaxtradeGymEnv so that a vector of them compiles once.
@jax.jit
def _gym_reset(key, count, params):
    return E.reset(jax.random.fold_in(key, count), params)


@jax.jit
def _gym_step(state, action, key, count, params):
    obs, state, reward, done, info = E.step(jax.random.fold_in(key, count), state, action, params)
    obs = jnp.where(done, info["terminal_obs"], obs)
    return state, (obs, reward, done, info["equity"], info["position"], info["costs"])


class JaxtradeGymEnv(gymnasium.Env):
    """jaxtrade's environment as a `gymnasium.Env`. `step` returns the episode's last observation when it
    ends (`terminated`); the next `reset` starts a new episode (a session of the split, as in training).
    `info`: equity, position (lots), costs of the bar."""

    metadata = {"render_modes": []}

    def __init__(self, env_params, seed: int = 0):
        self.params = env_params
        self.observation_space, self.action_space = _spaces(env_params)
        self._base_key = jax.random.key(seed)
        self._count = 0
        self._state = None

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._base_key, self._count = jax.random.key(seed), 0
        self._count += 1
        obs, self._state = _gym_reset(self._base_key, self._count, self.params)
        return np.array(obs, np.float32), {}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("JaxtradeGymEnv.step called before reset")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"JaxtradeGymEnv: action {action!r} outside {self.action_space}")
        self._count += 1
        self._state, out = _gym_step(self._state, int(action), self._base_key, self._count, self.params)
        obs, reward, done, equity, position, costs = jax.device_get(out)
        info = {"equity": float(equity), "position": int(position), "costs": float(costs)}
        return np.array(obs, np.float32), float(reward), bool(done), False, info


def make_vec_env(env_params, num_envs: int, seed: int = 0):
    """An SB3 `VecEnv` of `num_envs` jaxtrade envs, stepped together by one jitted `vmap` of `env.step`."""
    from stable_baselines3.common.vec_env import VecEnv

    vstep = jax.vmap(E.step, in_axes=(None, 0, 0, None))

    @jax.jit
    def reset_all(key, count, p):
        keys = jax.random.split(jax.random.fold_in(key, count), num_envs)
        return jax.vmap(E.reset, in_axes=(0, None))(keys, p)

    @jax.jit
    def step_all(state, actions, key, count, p):
        obs, state, reward, done, info = vstep(jax.random.fold_in(key, count), state, actions, p)
        return obs, state, reward, done, info["terminal_obs"]

    class JaxtradeVecEnv(VecEnv):
        def __init__(self):
            obs_space, act_space = _spaces(env_params)
            super().__init__(num_envs, obs_space, act_space)
            self._base_key, self._count = jax.random.key(seed), 0
            self._state = None
            self._actions = None

        def reset(self):
            self._count += 1
            obs, self._state = reset_all(self._base_key, self._count, env_params)
            return np.array(obs, np.float32)  # a writable copy: SB3 hands it to torch

        def step_async(self, actions):
            self._actions = jnp.asarray(np.asarray(actions).reshape(num_envs), jnp.int32)

        def step_wait(self):
            self._count += 1
            obs, self._state, reward, done, terminal = step_all(self._state, self._actions, self._base_key,
                                                                self._count, env_params)
            done = np.asarray(done)  # read-only view; the caller gets copies
            infos = [{} for _ in range(num_envs)]
            ended = np.flatnonzero(done)
            if ended.size:
                terminal = np.asarray(terminal, np.float32)
                for i in ended:
                    infos[i]["terminal_observation"] = terminal[i]
            return np.array(obs, np.float32), np.array(reward, np.float32), np.array(done), infos

        def close(self):
            pass

        def get_attr(self, attr_name, indices=None):
            return [getattr(self, attr_name)] * len(self._indices(indices))

        def set_attr(self, attr_name, value, indices=None):
            setattr(self, attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            raise NotImplementedError("JaxtradeVecEnv: the envs are one vmapped program, not objects")

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._indices(indices))

        def _indices(self, indices):
            if indices is None:
                return range(num_envs)
            return [indices] if isinstance(indices, int) else list(indices)

    return JaxtradeVecEnv()


def sb3_ppo(ppo_config, venv, seed: int = 0):
    """SB3 PPO with `ppo_config`'s settings: rollout (num_steps per env x num_envs), minibatch, epochs, learning
    rate, gamma, GAE lambda, clip (policy and value), coefficients, gradient clip, Adam eps, separate actor and
    critic MLPs of `hidden_sizes` with the same activation and orthogonal initialisation."""
    import torch
    from stable_baselines3 import PPO

    activations = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "elu": torch.nn.ELU,
                   "silu": torch.nn.SiLU}
    c = ppo_config
    hidden = list(c.hidden_sizes)
    return PPO("MlpPolicy", venv, learning_rate=c.learning_rate, n_steps=c.num_steps, batch_size=c.minibatch_size,
               n_epochs=c.update_epochs, gamma=c.gamma, gae_lambda=c.gae_lambda, clip_range=c.clip_epsilon,
               clip_range_vf=c.clip_epsilon if c.clip_value_loss else None,
               normalize_advantage=c.normalize_advantages, ent_coef=c.ent_coef, vf_coef=c.vf_coef,
               max_grad_norm=c.max_grad_norm, seed=seed, verbose=0, device="auto",
               policy_kwargs={"net_arch": {"pi": hidden, "vf": hidden}, "activation_fn": activations[c.activation],
                              "ortho_init": True, "optimizer_kwargs": {"eps": c.adam_eps}})


def _wrapper_rate(venv, num_steps: int) -> float:
    """Env steps/s of the VecEnv alone under random actions, through SB3's step API."""
    venv.reset()
    rng = np.random.default_rng(0)
    n = venv.num_envs
    actions = rng.integers(0, venv.action_space.n, (num_steps, n))
    venv.step(actions[0])
    t0 = time.perf_counter()
    for a in actions[1:]:
        venv.step(a)
    return (num_steps - 1) * n / (time.perf_counter() - t0)


def compare(ppo_config, env_params, name: str, jaxtrade_steps_per_s: float, *, repeats: int = 3,
            min_run_s: float = 1.0, torch_threads: int = 1) -> list[dict]:
    """Time SB3 PPO under `ppo_config` on `env_params` (one warm-up iteration, then `repeats` runs of k
    iterations, k from the warm-up so a run lasts about `min_run_s`); lines: `sb3` and `ppo_vs_sb3`.

    torch_threads: torch's intra-op threads while SB3 runs (0: torch's default, one per core). One by default:
    a small MLP's minibatch products gain little from sharing, and on a loaded machine two threads that wait
    for each other ran one iteration of the default config 18x slower (347 s against 19 s on the development
    machine at load 12-16)."""
    import torch

    threads_before = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        return _compare(ppo_config, env_params, name, jaxtrade_steps_per_s, repeats, min_run_s)
    finally:
        torch.set_num_threads(threads_before)


VEC_ENVS = {"batched": "one jitted vmap of env.step (JaxtradeVecEnv)",
            "dummy": "SB3 DummyVecEnv of JaxtradeGymEnv (one env.step call per env)"}


def _compare(ppo_config, env_params, name, jaxtrade_steps_per_s, repeats, min_run_s) -> list[dict]:
    import stable_baselines3
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv

    c = ppo_config
    batch = c.num_envs * c.num_steps
    lines = []
    for kind, what in VEC_ENVS.items():
        if kind == "batched":
            venv = make_vec_env(env_params, c.num_envs)
        else:
            venv = DummyVecEnv([lambda i=i: JaxtradeGymEnv(env_params, seed=i) for i in range(c.num_envs)])
        wrapper = _wrapper_rate(venv, max(8, min(c.num_steps, 64 if kind == "batched" else 8)))
        model = sb3_ppo(c, venv)
        t0 = time.perf_counter()
        model.learn(total_timesteps=batch)
        warm = time.perf_counter() - t0
        iters = max(1, min(20, math.ceil(min_run_s / max(warm, 1e-6))))
        times = []
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            model.learn(total_timesteps=iters * batch, reset_num_timesteps=False)
            times.append(time.perf_counter() - t0)
        rate = iters * batch / statistics.median(times)
        ratio = jaxtrade_steps_per_s / rate
        lines += [
            {"bench": "sb3", "config": name, "vec_env": kind, "vec_env_is": what,
             "library": f"stable-baselines3 {stable_baselines3.__version__}", "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "sb3_device": str(model.device), "num_envs": c.num_envs,
             "num_steps": c.num_steps, "minibatch_size": c.minibatch_size, "update_epochs": c.update_epochs,
             "hidden_sizes": list(c.hidden_sizes), "steps_per_s": round(rate, 1), "iterations_per_run": iters,
             "run_s": [round(t, 4) for t in times], "wrapper_env_steps_per_s": round(wrapper, 1)},
            {"bench": "ppo_vs_sb3", "config": name, "vec_env": kind,
             "jaxtrade_steps_per_s": round(jaxtrade_steps_per_s, 1), "sb3_steps_per_s": round(rate, 1),
             "ratio": round(ratio, 2), "bar": RATIO_BAR, "met": bool(ratio >= RATIO_BAR)}]
        venv.close()
    return lines
