"""Trainers (DESIGN section 4), each seeing only its config, env params and network:

    base      the trainer contract (`init(key, params)`, `train_iteration(state)`) and the one shared `run`
    ppo       stage 1: PPO (the loss, the trainer, hyperparameters as `vmap`-able leaves)
    moe       stage 2: PPO with the mixture-of-experts network and a loss hook
    meta      the loss-agnostic MAML core (inner adaptation, grad-of-grad meta-gradient)
    maml      stage 3: MAML over (symbol, time window) tasks
    rollout   rollouts, GAE, episode statistics, greedy evaluation (shared); shuffle: minibatch permutations

Import the submodules directly: `from jaxtrade.agents import ppo, base`.
"""
