"""An ensemble policy: N members of one architecture, their parameters stacked on a leading member axis and run
by one `vmap` (the seed guide's "ensemble methods for robustness").

    ens = Ensemble(member=network, num_members=4, rule="mean")
    params = stack_members([p0, p1, p2, p3])              # every leaf gains a leading [4] axis
    scores, value = ens.apply(params, obs)                # obs [..., D] -> [..., A], [...]
    probs = ens.action_probs(params, obs)                 # [..., A]; the action is argmax(scores)

Rules (`--ensemble_rule`):
  mean  p(a) = mean over members of each member's softmax(logits)(a); `scores` = log p (a normalised
        log-probability), the action argmax p. Ties (equal mean probabilities) go to the lowest action index.
  vote  each member votes for its own greedy (argmax) action; p(a) = the share of votes for a; the action is the
        one with the most votes. A tie in votes goes to the tied action with the highest mean probability (the
        `mean` rule among the tied actions), and a tie in that too to the lowest action index (jnp.argmax's
        rule). `scores` = votes + mean probability / (2 N): the vote count decides, the mean probability (under
        1 / (2 N), less than one vote) only breaks ties, so argmax(scores) is exactly this rule.
  value: the members' mean value under both rules.

`Ensemble` is a frozen dataclass holding a Flax module, so it is hashable and equal for ensembles of one
architecture and rule: the backtester's `policies.Greedy(ensemble)` compiles once for all of them, as for a
single network. It has the network contract `apply(params, obs) -> (scores, value)` and `init(key, obs)`, which
the export and loading code use; it is for acting, not for training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

RULES = ("mean", "vote")


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """`num_members` copies of the Flax module `member` with stacked parameters, acting by `rule`."""

    member: Any
    num_members: int
    rule: str = "mean"

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Ensemble.rule: {self.rule!r} is not one of {', '.join(RULES)}")
        if int(self.num_members) < 1:
            raise ValueError(f"Ensemble.num_members must be >= 1, got {self.num_members}")

    @property
    def num_actions(self) -> int:
        return int(self.member.num_actions)

    def init(self, key: jax.Array, obs: jax.Array):
        """Stacked fresh member parameters (independent keys); used for shapes (`jax.eval_shape`)."""
        return jax.vmap(lambda k: self.member.init(k, obs))(jax.random.split(key, int(self.num_members)))

    def member_outputs(self, params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every member's (logits [M, ..., A], value [M, ...]) in one `vmap` over the member axis."""
        return jax.vmap(lambda p: self.member.apply(p, obs))(params)

    def _probs_and_votes(self, params, obs):
        logits, values = self.member_outputs(params, obs)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [M, ..., A]
        mean_probs = probs.mean(axis=0)
        votes = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32).sum(axis=0)
        return mean_probs, votes, values.mean(axis=0)

    def action_probs(self, params, obs: jax.Array) -> jax.Array:
        """[..., A]: the mean of the members' probabilities (`mean`) or the vote shares (`vote`)."""
        mean_probs, votes, _ = self._probs_and_votes(params, obs)
        return mean_probs if self.rule == "mean" else votes / float(self.num_members)

    def apply(self, params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(scores [..., A] whose argmax is the ensemble's action, mean value [...]); see the module docstring."""
        mean_probs, votes, value = self._probs_and_votes(params, obs)
        if self.rule == "mean":
            return jnp.log(mean_probs), value
        return votes + mean_probs / (2.0 * float(self.num_members)), value

    def member_params(self, params, i: int):
        """Member `i`'s parameters (the leading axis sliced off)."""
        return jax.tree.map(lambda x: x[i], params)


def stack_members(params_list: Sequence[Any]):
    """Stack member parameter pytrees (one architecture) on a new leading axis."""
    if not params_list:
        raise ValueError("stack_members: no members")
    structures = {jax.tree.structure(p) for p in params_list}
    if len(structures) != 1:
        raise ValueError("stack_members: the members do not share one architecture")
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *params_list)
