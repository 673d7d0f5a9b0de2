"""The benchmark suite (`python -m experiments.bench all`): FLOP counting against hand counts, the synthetic
market's layout, the gymnasium wrapper against `env.step`, and the JSON the command writes. Nothing is timed."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench_market, bench_report, bench_roofline
from jaxtrade import env as E
from jaxtrade.agents.ppo import PPOConfig
from jaxtrade.data import load_market
from jaxtrade.networks import make_network

REPO = Path(__file__).resolve().parents[1]


def test_ppo_flops_match_a_hand_count():
    params = make_network(3, (64, 64)).init(jax.random.key(0), jnp.zeros((1, 19)))
    cfg = PPOConfig(num_envs=2048, num_steps=64, minibatch_size=4096, update_epochs=4)
    f = bench_roofline.ppo_flops(cfg, params)
    # forward: 2 x (19*64 + 64*64 + 64*3 + 19*64 + 64*64 + 64*1) = 2 x 10880
    assert f.forward_per_row == 21_760
    # backward: weight gradients of every layer (21,760) + input gradients of the layers after the first
    # (2 x (64*64 + 64*3 + 64*64 + 64*1) = 16,896)
    assert f.backward_per_row == 21_760 + 16_896
    assert f.rollout_per_step == pytest.approx(21_760 * (1 + 1 / 64))
    assert f.update_per_step == pytest.approx(4 * (21_760 + 38_656))  # every row used, 4 epochs
    # A minibatch that does not divide the batch leaves rows out of each epoch.
    g = bench_roofline.ppo_flops(cfg.replace(num_envs=3, num_steps=100, minibatch_size=128), params)
    assert g.update_per_step == pytest.approx(4 * (2 * 128 / 300) * (21_760 + 38_656))


def test_matmul_program_does_the_counted_products():
    params = make_network(3, (8, 8)).init(jax.random.key(0), jnp.zeros((1, 5)))
    program = bench_roofline.MatmulProgram(params, minibatch_size=16, minibatches=2)
    per_row = bench_roofline.ppo_flops(PPOConfig(num_envs=1, num_steps=16, minibatch_size=16, update_epochs=1),
                                       params)
    assert program.flops_per_call == (per_row.forward_per_row + per_row.backward_per_row) * 16 * 2
    before = jax.tree.map(np.asarray, program._weights)
    program.call()
    after = jax.tree.map(np.asarray, program._weights)
    # Every kernel moved (its gradient product was computed and used, not dropped by XLA).
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    # The products themselves, against numpy: forward h = x W, dW = h^T g from g = output.
    ws = {"c": [np.ones((5, 8), np.float32), np.full((8, 2), 0.5, np.float32)]}
    x = np.arange(15, dtype=np.float32).reshape(3, 5) / 10
    grads = bench_roofline._minibatch_products({"c": [jnp.asarray(w) for w in ws["c"]]}, jnp.asarray(x))["c"]
    h1 = x @ ws["c"][0]
    g2 = h1 @ ws["c"][1]
    np.testing.assert_allclose(grads[1], h1.T @ g2, rtol=1e-5)
    np.testing.assert_allclose(grads[0], x.T @ (g2 @ ws["c"][1].T), rtol=1e-5)


def test_synthetic_market_loads_through_the_processed_path(tmp_path):
    path = bench_market.write_random_walk(tmp_path, 3 * 375 + 100)
    market = load_market(tmp_path, path.stem)
    assert market.num_bars == 3 * 375 + 100 and market.num_sessions == 4 and market.bar_minutes == 1
    assert market.synthetic
    assert market.minute_of_day[0] == 9 * 60 + 15 and market.minute_of_day[374] == 15 * 60 + 29
    close = np.asarray(market.data.close)
    assert np.all(np.asarray(market.data.low) <= np.minimum(np.asarray(market.data.open), close) + 1e-3)
    with pytest.raises(ValueError, match="fewer than 3 sessions"):
        bench_market.random_walk_columns(1000)


def test_gym_wrapper_steps_jaxtrades_env(tmp_path):
    gymnasium = pytest.importorskip("gymnasium")
    from experiments.bench_sb3 import JaxtradeGymEnv
    from experiments.bench_suite import bench_env_params

    bench_market.write_random_walk(tmp_path, 4 * 375)
    params = bench_env_params(load_market(tmp_path, bench_market.SYMBOL))
    env = JaxtradeGymEnv(params, seed=3)
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    # The same episode stepped by jaxtrade's env directly gives the same observations and rewards.
    _, state = E.reset(jax.random.fold_in(jax.random.key(5), 1), params)
    np.testing.assert_array_equal(obs, np.asarray(E.reset(jax.random.fold_in(jax.random.key(5), 1), params)[0]))
    rng = np.random.default_rng(0)
    for i in range(400):
        a = int(rng.integers(0, 3))
        obs, reward, terminated, truncated, info = env.step(a)
        o, state, r, done, inf = E.step(jax.random.fold_in(jax.random.key(5), i + 2), state, jnp.int32(a), params)
        assert reward == pytest.approx(float(r)) and terminated == bool(done) and not truncated
        np.testing.assert_allclose(obs, np.asarray(inf["terminal_obs"] if done else o), rtol=1e-6)
        if terminated:
            break
    assert terminated, "a one-session episode ends within 375 steps"
    assert isinstance(env.observation_space, gymnasium.spaces.Box)


def test_bench_all_writes_one_line_per_configuration(tmp_path):
    """`bench all` at tiny sizes, env and PPO (the MoE and MAML rows are the slow test's): every line is JSON,
    the --out document holds the same lines and says it is complete, the shared sweep point is measured once,
    and the PPO roofline fields agree with each other."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "all", f"--out={out}", "--benches=env,ppo",
         "--sweep_num_envs=2,4", "--sweep-num-bars=1200,1500", "--sweep_at_num_envs=2", "--sweep_at_num_bars=1200",
         "--configs=", "--repeats=1", "--min_run_s=0", "--max_config_s=5"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    doc = json.loads(out.read_text())
    assert doc["complete"] and doc["results"] == lines[:-1] and lines[-1]["bench"] == "suite_done"
    kinds = [line["bench"] for line in lines]
    assert kinds.count("load") == 2 and kinds.count("env") == 3 and kinds.count("ppo") == 3
    env_rows = {(r["num_envs"], r["num_bars"]): r for r in lines if r["bench"] == "env"}
    assert set(env_rows) == {(2, 1200), (4, 1200), (2, 1500)}
    assert env_rows[(2, 1200)]["sweeps"] == ["num_envs", "num_bars"]  # measured once for both sweeps
    for r in lines:
        if r["bench"] in ("env", "ppo"):
            assert r["steps_per_s"] > 0 and r["compile_s"] > 0 and r["peak_rss_mb"] > 0
            assert r["steps_per_call"] == r["num_envs"] * r["num_steps"]
            assert {"device", "cpus", "load_avg_1m", "jax", "xla_temp_mb", "device_peak_mb"} <= set(r)
        if r["bench"] == "ppo":
            assert r["flops_per_step"] == pytest.approx(r["rollout_flops_per_step"] + r["update_flops_per_step"],
                                                        abs=0.2)
            assert r["roofline_share"] == pytest.approx(r["achieved_gflops"] / r["matmul_peak_gflops"], rel=0.5)
            assert 0 < r["roofline_share"]
    assert sum(r["bench"] == "matmul_peak" for r in lines) == 3
    # The report renders from the document.
    text = bench_report.report(doc)
    assert "| 4 |" in text and "| 1,500 |" in text


def test_bench_all_refuses_bad_flags_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "all", "--benches=env,gpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --benches: unknown gpu")
