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


def _shapes(network, obs_dim):
    """The network's parameter shapes (no initialisation runs)."""
    return jax.eval_shape(network.init, jax.random.key(0), jnp.zeros((1, obs_dim)))


def test_ppo_flops_match_a_hand_count():
    params = _shapes(make_network(3, (64, 64)), 19)
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
    params = _shapes(make_network(3, (8, 8)), 5)
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
    from experiments.bench_programs import bench_env_params

    bench_market.write_random_walk(tmp_path, 4 * 375)
    params = bench_env_params(load_market(tmp_path, bench_market.SYMBOL))
    env = JaxtradeGymEnv(params, seed=3)
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    # The same episode stepped by jaxtrade's env directly gives the same observations and rewards.
    reset, step = jax.jit(E.reset), jax.jit(E.step)
    ref_obs, state = reset(jax.random.fold_in(jax.random.key(5), 1), params)
    np.testing.assert_array_equal(obs, np.asarray(ref_obs))
    rng = np.random.default_rng(0)
    for i in range(400):
        a = int(rng.integers(0, 3))
        obs, reward, terminated, truncated, info = env.step(a)
        o, state, r, done, inf = step(jax.random.fold_in(jax.random.key(5), i + 2), state, jnp.int32(a), params)
        assert reward == pytest.approx(float(r)) and terminated == bool(done) and not truncated
        np.testing.assert_allclose(obs, np.asarray(inf["terminal_obs"] if done else o), rtol=1e-6)
        if terminated:
            break
    assert terminated, "a one-session episode ends within 375 steps"
    assert isinstance(env.observation_space, gymnasium.spaces.Box)


def _bench_all(tmp_path, *flags):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "all", f"--out={out}", "--configs=",
                           "--repeats=1", "--min_run_s=0", "--max_config_s=5", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    doc = json.loads(out.read_text())
    # The --out document holds the printed lines and says it is complete.
    assert doc["complete"] and doc["results"] == lines and lines[-1]["bench"] == "suite_done"
    assert lines[0]["bench"] == "suite" and doc["machine"]["cpus"] == lines[0]["cpus"]
    for r in lines:
        if r["bench"] in bench_report.BENCHES:
            assert r["steps_per_s"] > 0 and r["compile_s"] > 0 and r["peak_rss_mb"] > 0
            assert {"device", "cpus", "load_avg_1m", "jax", "xla_temp_mb", "device_peak_mb", "run_s"} <= set(r)
    return lines, doc


def test_bench_all_sweeps_both_axes_and_measures_their_meeting_point_once(tmp_path):
    lines, doc = _bench_all(tmp_path, "--benches=env", "--sweep_num_envs=2,3", "--sweep-num-bars=1200,1500",
                            "--sweep_at_num_envs=2", "--sweep_at_num_bars=1200")
    loads = [r for r in lines if r["bench"] == "load"]
    assert [r["num_bars"] for r in loads] == [1200, 1500] and all(r["load_s"] > 0 for r in loads)
    rows = {(r["num_envs"], r["num_bars"]): r for r in lines if r["bench"] == "env"}
    assert len(rows) == 3 == sum(r["bench"] == "env" for r in lines)
    assert rows[(2, 1200)]["sweeps"] == ["num_envs", "num_bars"]
    assert rows[(3, 1200)]["sweeps"] == ["num_envs"] and rows[(2, 1500)]["sweeps"] == ["num_bars"]
    for r in rows.values():
        assert r["steps_per_call"] == r["num_envs"] * r["num_steps"]
    text = bench_report.report(doc)
    assert "| 3 |" in text and "| 1,500 |" in text and "cpu" in text


@pytest.mark.slow
def test_bench_all_trainer_lines(tmp_path):
    """PPO (with its roofline), MoE and MAML at one tiny point: one compile each (~40 CPU-s, hence slow)."""
    lines, _ = _bench_all(tmp_path, "--benches=ppo,moe,maml", "--sweep_num_envs=2", "--sweep_num_bars=1200",
                          "--sweep_at_num_envs=2", "--sweep_at_num_bars=1200")
    (ppo,) = [r for r in lines if r["bench"] == "ppo"]
    (peak,) = [r for r in lines if r["bench"] == "matmul_peak"]
    assert ppo["steps_per_call"] == 2 * ppo["num_steps"] and ppo["minibatch_size"] == peak["minibatch_size"]
    assert ppo["flops_per_step"] == pytest.approx(ppo["rollout_flops_per_step"] + ppo["update_flops_per_step"],
                                                  abs=0.2)
    assert ppo["matmul_peak_gflops"] == peak["gflops"] > 0
    assert ppo["roofline_share"] == pytest.approx(ppo["achieved_gflops"] / peak["gflops"], rel=0.5)
    (moe,) = [r for r in lines if r["bench"] == "moe"]
    (maml,) = [r for r in lines if r["bench"] == "maml"]
    assert moe["num_experts"] == 4 and moe["steps_per_call"] == 2 * moe["num_steps"]
    # A meta-iteration: per task a support rollout and the query rollouts before and after adaptation.
    assert maml["order"] == "second" and maml["steps_per_call"] == 2 * 3 * 2 * maml["num_steps"]


def test_sb3_runs_the_same_config_on_the_same_market(tmp_path):
    pytest.importorskip("stable_baselines3")
    from experiments.bench_sb3 import compare, make_vec_env, sb3_ppo
    from experiments.bench_programs import bench_env_params

    bench_market.write_random_walk(tmp_path, 4 * 375)
    params = bench_env_params(load_market(tmp_path, bench_market.SYMBOL))
    cfg = PPOConfig(num_envs=4, num_steps=16, minibatch_size=32, update_epochs=2, hidden_sizes=(16, 16))
    venv = make_vec_env(params, cfg.num_envs)
    model = sb3_ppo(cfg, venv)
    assert (model.n_steps, model.batch_size, model.n_epochs, model.n_envs) == (16, 32, 2, 4)
    assert model.clip_range(1.0) == cfg.clip_epsilon and model.gamma == cfg.gamma
    widths = [m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")]
    assert widths == [16, 16]
    obs = venv.reset()
    assert obs.shape == (4, params.obs_dim)
    lines = compare(cfg, params, "tiny", 1000.0, repeats=1, min_run_s=0)
    assert [(r["bench"], r["vec_env"]) for r in lines] == [("sb3", "batched"), ("ppo_vs_sb3", "batched"),
                                                           ("sb3", "dummy"), ("ppo_vs_sb3", "dummy")]
    for sb3_line, ratio_line in (lines[:2], lines[2:]):
        assert sb3_line["steps_per_s"] > 0 and sb3_line["num_envs"] == 4 and sb3_line["torch_threads"] == 1
        assert ratio_line["ratio"] == pytest.approx(1000.0 / sb3_line["steps_per_s"], rel=0.01)
        assert ratio_line["met"] == (ratio_line["ratio"] >= 120)


def test_bench_all_refuses_bad_flags_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "all", "--benches=env,gpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --benches: unknown gpu")
