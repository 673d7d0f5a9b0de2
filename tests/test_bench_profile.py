"""`experiments.bench profile`: op events of a jax.profiler trace matched to the compiled module's
instructions and classed as products, transcendentals, gathers or other."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.bench_profile import classify, op_times, parse_hlo, profile_program
from experiments.bench_programs import Program

REPO = Path(__file__).resolve().parents[1]

# Hand-written optimised HLO in XLA's text form: a library fusion around a dot, a tanh fusion whose
# computation reduces with a nested `to_apply`, a gather fusion, a oneDNN matmul custom call, a plain add and
# a while loop whose body holds one of them.
HLO = """HloModule jit_f, entry_computation_layout={(f32[8,4]{1,0})->f32[8,4]{1,0}}

%add.r (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.9 = f32[] add(f32[] %a, f32[] %b)
}

%fused_dot (p0: f32[8,4], p1: f32[4,4]) -> f32[8,4] {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,4]{1,0} dot(f32[8,4]{1,0} %p0, f32[4,4]{1,0} %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_tanh (q0: f32[8,4]) -> f32[8] {
  %q0 = f32[8,4]{1,0} parameter(0)
  %tanh.2 = f32[8,4]{1,0} tanh(f32[8,4]{1,0} %q0)
  %c0 = f32[] constant(0)
  ROOT %reduce.3 = f32[8]{0} reduce(f32[8,4]{1,0} %tanh.2, f32[] %c0), dimensions={1}, to_apply=%add.r
}

%fused_gather (g0: f32[8,4], g1: s32[8]) -> f32[8,4] {
  %g0 = f32[8,4]{1,0} parameter(0)
  %g1 = s32[8]{0} parameter(1)
  ROOT %gather.4 = f32[8,4]{1,0} gather(f32[8,4]{1,0} %g0, s32[8]{0} %g1), offset_dims={1}, collapsed_slice_dims={0}, start_index_map={0}, index_vector_dim=1, slice_sizes={1,4}
}

%body (t: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %t = (s32[], f32[8,4]{1,0}) parameter(0)
  %x.b = f32[8,4]{1,0} get-tuple-element((s32[], f32[8,4]{1,0}) %t), index=1
  %i.b = s32[] get-tuple-element((s32[], f32[8,4]{1,0}) %t), index=0
  %add_fusion.5 = f32[8,4]{1,0} add(f32[8,4]{1,0} %x.b, f32[8,4]{1,0} %x.b)
  ROOT %tuple.6 = (s32[], f32[8,4]{1,0}) tuple(s32[] %i.b, f32[8,4]{1,0} %add_fusion.5)
}

%cond (c: (s32[], f32[8,4])) -> pred[] {
  %c = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %lt = pred[] constant(false)
}

ENTRY %main.7 (x: f32[8,4], w: f32[4,4], idx: s32[8]) -> f32[8,4] {
  %x = f32[8,4]{1,0} parameter(0)
  %w = f32[4,4]{1,0} parameter(1)
  %idx = s32[8]{0} parameter(2)
  %ynn_fusion.1 = f32[8,4]{1,0} fusion(f32[8,4]{1,0} %x, f32[4,4]{1,0} %w), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(f)/dot_general"}
  %tanh_fusion.2 = f32[8]{0} fusion(f32[8,4]{1,0} %ynn_fusion.1), kind=kLoop, calls=%fused_tanh
  %gather_fusion.3 = f32[8,4]{1,0} fusion(f32[8,4]{1,0} %x, s32[8]{0} %idx), kind=kLoop, calls=%fused_gather
  %custom-call.4 = f32[8,4]{1,0} custom-call(f32[8,4]{1,0} %x, f32[4,4]{1,0} %w), custom_call_target="__onednn$matmul"
  %init = (s32[], f32[8,4]{1,0}) tuple(s32[] constant(0), f32[8,4]{1,0} %gather_fusion.3)
  %while.5 = (s32[], f32[8,4]{1,0}) while((s32[], f32[8,4]{1,0}) %init), condition=%cond, body=%body
  ROOT %add.6 = f32[8,4]{1,0} add(f32[8,4]{1,0} %custom-call.4, f32[8,4]{1,0} %x)
}
"""


def test_instructions_are_classed_by_what_they_and_their_computations_hold():
    ins, comps = parse_hlo(HLO)
    assert ins["ynn_fusion.1"][:2] == ("fusion", ["fused_dot"])
    assert ins["while.5"][1] == ["cond", "body"]
    assert classify("ynn_fusion.1", ins, comps) == "products"
    assert classify("tanh_fusion.2", ins, comps) == "transcendentals"  # the reduce's to_apply is only an add
    assert classify("gather_fusion.3", ins, comps) == "gathers"
    assert classify("custom-call.4", ins, comps) == "products"  # a library matmul, known by its target
    assert classify("add.6", ins, comps) == "other"
    assert classify("add_fusion.5", ins, comps) == "other"  # inside the loop body
    assert classify("while.5", ins, comps) is None  # control flow: its body's ops are counted instead
    assert classify("ThunkExecutor::Execute", ins, comps) is None


def test_op_times_sum_the_events_of_each_class():
    ins, comps = parse_hlo(HLO)
    events = [{"ph": "X", "name": "ynn_fusion.1", "dur": 300.0}, {"ph": "X", "name": "ynn_fusion.1", "dur": 100.0},
              {"ph": "X", "name": "tanh_fusion.2", "dur": 50.0}, {"ph": "X", "name": "gather_fusion.3", "dur": 20.0},
              {"ph": "X", "name": "add_fusion.5", "dur": 7.0}, {"ph": "X", "name": "while.5", "dur": 1000.0},
              {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 5000.0},
              {"ph": "i", "name": "ynn_fusion.1", "dur": 999.0}]  # not a complete event
    by_class, by_op = op_times(events, ins, comps)
    assert by_class == pytest.approx({"products": 400e-6, "transcendentals": 50e-6, "gathers": 20e-6,
                                      "other": 7e-6})
    assert by_op["ynn_fusion.1"] == pytest.approx(400e-6) and "while.5" not in by_op


def test_a_product_bound_program_profiles_as_products():
    """A real trace of a compiled scan of 256 x 256 products with a small tanh: the matched op time is mostly
    products, and the tanh is seen (the names in the trace are the module's instructions)."""
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((16, 256, 256)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((256, 256)) / 16, jnp.float32)

    def f(w, xs):
        def body(w, x):
            y = x @ w
            return w + 1e-6 * jnp.tanh(y[:8, :8]).sum(), None
        return jax.lax.scan(body, w, xs)[0]

    compiled = jax.jit(f).lower(w, xs).compile()
    program = Program(compiled, lambda: compiled(w, xs), 1, {})
    result = profile_program(program, repeats=3)
    assert sum(result["share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert result["share"]["products"] > 0.5
    assert result["share"]["transcendentals"] > 0.0
    assert result["top_ops"][0]["class"] == "products"


@pytest.mark.slow
def test_bench_profile_command_profiles_a_ppo_iteration():
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "profile", "--configs=default",
                           "--num_envs=8", "--repeats=1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    line = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    assert line["bench"] == "profile" and line["stage"] == "ppo" and line["steps_per_call"] == 8 * 128
    assert set(line["share"]) == {"products", "transcendentals", "gathers", "other"}
    assert line["share"]["products"] > 0.1 and line["share"]["transcendentals"] > 0.0
    assert line["square_matmul_gflops"] > 0


def test_bench_profile_refuses_an_unknown_stage_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "profile", "--stage=gpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --stage")


def test_square_matmul_peak_counts_its_flops():
    """The rate is 2 n^3 FLOPs per product over the measured time: a program of twice the products at the same
    n takes about twice as long, so the rates agree within the machine's noise (a wrong FLOP count would not)."""
    from experiments.bench_roofline import square_matmul_peak

    a = square_matmul_peak(256, products=4, repeats=3)
    b = square_matmul_peak(256, products=16, repeats=3)
    assert a["gflops"] > 0 and b["gflops"] > 0
    assert 0.3 < a["gflops"] / b["gflops"] < 3.0
