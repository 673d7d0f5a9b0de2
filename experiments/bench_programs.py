"""What each benchmark compiles and calls: the one module of the suite that knows the trainers' entry points
and how the suite sizes them.

    params = bench_env_params(market)                     # the training split under the training defaults
    program = compile_trainer("ppo", params, 4096, base)  # one iteration, compiled; program.call() runs it

A trainer's rollout shortens as parallel episodes grow, so that one iteration holds at most PPO_MAX_BATCH env
steps (PPO, MoE; never fewer than PPO_MIN_STEPS) and one MAML task rollout at most MAML_MAX_ROLLOUT (never
fewer than MAML_MIN_STEPS).
"""

from __future__ import annotations

PPO_MAX_BATCH, PPO_MIN_STEPS = 2**19, 8
MAML_MAX_ROLLOUT, MAML_MIN_STEPS = 2**12, 1
ENV_STEPS_PER_CALL = 2**20


def bench_env_params(market, config=None):
    """The training split's `EnvParams` under `config` (default: the training defaults, `EnvConfig()`: NSE
    futures costs, one tick of slippage, one-session episodes, Rs 20 lakh), through `env.env_params`, the one
    path every consumer takes."""
    from jaxtrade.env import EnvConfig, env_params

    return env_params(config or EnvConfig(), market, "train")


def ppo_sweep_config(base, num_envs: int):
    """`base` (a PPOConfig) at `num_envs` parallel episodes, its rollout shortened to keep an iteration at
    most PPO_MAX_BATCH env steps, its minibatch no larger than the batch."""
    steps = int(min(base.num_steps, max(PPO_MIN_STEPS, PPO_MAX_BATCH // num_envs)))
    return base.replace(num_envs=num_envs, num_steps=steps, minibatch_size=min(base.minibatch_size, num_envs * steps))


def maml_sweep_config(num_envs: int):
    from jaxtrade.agents.maml import MAMLConfig

    base = MAMLConfig()
    steps = int(min(base.support_num_steps, max(MAML_MIN_STEPS, MAML_MAX_ROLLOUT // num_envs)))
    return base.replace(support_num_envs=num_envs, query_num_envs=num_envs, support_num_steps=steps,
                        query_num_steps=steps)


class Program:
    """A compiled unit of work: `call()` runs it once (one env rollout, or one training iteration) and
    returns something to block on; `steps_per_call` env steps each."""

    def __init__(self, compiled, call, steps_per_call: int, describe: dict, params=None, config=None):
        self.compiled, self.call, self.steps_per_call = compiled, call, int(steps_per_call)
        self.describe, self.params, self.config = describe, params, config


def compile_env(env_params, num_envs: int) -> Program:
    import jax

    from experiments.bench_env import make_runner

    num_steps = int(max(64, min(4096, ENV_STEPS_PER_CALL // num_envs)))
    compiled = make_runner(env_params, num_envs, num_steps).lower(jax.random.key(0)).compile()
    keys = iter(range(1, 2**31))
    return Program(compiled, lambda: compiled(jax.random.key(next(keys))), num_envs * num_steps,
                   {"num_steps": num_steps})


def _compile_iteration(trainer, describe: dict, config=None) -> Program:
    """One `train_iteration` through the shared `agents.base.run` (the trainer is an argument of the
    compiled program, as in training), with the state carried from call to call."""
    import functools

    import jax

    from jaxtrade.agents.base import run

    state = {"s": jax.block_until_ready(jax.jit(lambda t, k: t.init(k))(trainer, jax.random.key(0)))}
    compiled = jax.jit(functools.partial(run, num_iterations=1)).lower(trainer, state["s"]).compile()

    def call():
        state["s"] = compiled(trainer, state["s"])[0]
        return state["s"]

    return Program(compiled, call, trainer.env_steps_per_iteration, describe, trainer.params_of(state["s"]),
                   config)


def compile_trainer(kind: str, env_params, num_envs: int, ppo_base) -> Program:
    """One iteration of PPO or MoE (rollout + GAE + update), or one MAML meta-iteration, compiled; `num_envs`
    0 keeps `ppo_base`'s rollout (MAML's defaults)."""
    from jaxtrade.agents import maml, moe, ppo

    if kind == "maml":
        cfg = maml_sweep_config(num_envs) if num_envs else maml.MAMLConfig()
        trainer = maml.make_trainer(cfg, ppo.PPOConfig(), env_params)
        describe = {"order": "first" if cfg.first_order else "second", "inner_loop_steps": cfg.inner_loop_steps,
                    "meta_batch_size": cfg.meta_batch_size, "num_steps": cfg.support_num_steps}
        return _compile_iteration(trainer, describe)
    cfg = ppo_sweep_config(ppo_base, num_envs) if num_envs else ppo_base
    if kind == "moe":
        moe_cfg = moe.MoEConfig(num_iterations=1)
        trainer = moe.make_trainer(moe_cfg, cfg, env_params)
        describe = {"num_experts": moe_cfg.num_experts, "expert_hidden_dim": moe_cfg.expert_hidden_dim}
    else:
        trainer = ppo.make_trainer(cfg, env_params)
        describe = {"hidden_sizes": list(cfg.hidden_sizes)}
    describe.update(num_steps=cfg.num_steps, minibatch_size=cfg.minibatch_size, update_epochs=cfg.update_epochs)
    return _compile_iteration(trainer, describe, cfg)
