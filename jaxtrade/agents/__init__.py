"""Trainers (DESIGN section 4): `ppo` (stage 1), and the shared machinery in `rollout` (rollouts, GAE, episode
statistics, greedy evaluation) that every stage reuses. Import the submodules directly:
`from jaxtrade.agents import ppo, rollout`."""
