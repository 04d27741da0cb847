"""bench/bench_train_step.py --profile: the op-by-op profile of the train step (trace parsing and attribution on a
hand-made trace with known answers; the profile of a real step of the tiny preset on generated data)."""

import argparse

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_train_step")


def _event(meta: int, start_us: float, dur_us: float, **stats) -> str:
    ids = {"hlo_op": 1, "hlo_module": 2, "run_id": 3, "_p": 4, "_c": 5}
    body = []
    for name, value in stats.items():
        kind = "str_value" if isinstance(value, str) else ("int64_value" if name == "run_id" else "uint64_value")
        body.append(f"stats {{ metadata_id: {ids[name]} {kind}: {value!r} }}".replace("'", '"'))
    return (f"events {{ metadata_id: {meta} offset_ps: {int(start_us * 1e6)} duration_ps: {int(dur_us * 1e6)} "
            + " ".join(body) + " }")


def _plane(lines: dict[str, list[str]]) -> str:
    names = ["dot.1", "fusion.2", "ThreadpoolListener::Record", "ThreadpoolListener::StartRegion",
             "ThreadpoolListener::StopRegion", "ThunkExecutor::Execute", "ThunkExecutor::Execute (wait for completion)",
             "other.1"]
    stats = ["hlo_op", "hlo_module", "run_id", "_p", "_c"]
    text = 'planes { id: 1 name: "/host:CPU" '
    for i, (name, events) in enumerate(lines.items()):
        text += f'lines {{ id: {i + 1} name: "{name}" timestamp_ns: 0 ' + " ".join(events) + " } "
    text += " ".join(f'event_metadata {{ key: {i + 1} value {{ id: {i + 1} name: "{n}" }} }}' for i, n in enumerate(names))
    text += " ".join(f'stat_metadata {{ key: {i + 1} value {{ id: {i + 1} name: "{n}" }} }}' for i, n in enumerate(stats))
    return text + " }"


def test_attribution_of_a_known_trace(bench):
    """Thread a runs the executor (0-30 us) with dot.1 (0-10, scheduling pool task 7 at 2) and fusion.2 (12-20);
    thread b runs task 7 (3-25) and an op of another program; thread c only waits for completion."""
    import jax

    op = dict(hlo_module="jit_step", run_id=5)
    lines = {
        "a": [_event(6, 0, 30), _event(1, 0, 10, hlo_op="dot.1", **op), _event(3, 2, 0, _p=7),
              _event(2, 12, 8, hlo_op="fusion.2", **op)],
        "b": [_event(4, 3, 0, _c=7), _event(5, 25, 0), _event(8, 30, 5, hlo_op="other.1", hlo_module="jit_other",
                                                                 run_id=9)],
        "c": [_event(7, 0, 40)],
    }
    plane = jax.profiler.ProfileData.from_text_proto(_plane(lines)).find_plane_with_name("/host:CPU")
    ns = 1e3
    charged, events, runs = bench.attribute_cpu_time(plane, "jit_step", cores=2)
    # Two cores: dot.1 is charged its event and its task on the other thread; the executor its gaps.
    assert charged == pytest.approx({"dot.1": 32 * ns, "fusion.2": 8 * ns, bench.EXECUTOR: 12 * ns})
    assert events == {"dot.1": 1, "fusion.2": 1}
    assert runs == {5: (0.0, 20 * ns)}
    # One core: two busy threads share it; the total is the 30 us the core was busy.
    charged, _, _ = bench.attribute_cpu_time(plane, "jit_step", cores=1)
    assert charged == pytest.approx({"dot.1": 17.5 * ns, "fusion.2": 4 * ns, bench.EXECUTOR: 8.5 * ns})


def test_stage_of_named_scopes(bench):
    cases = {
        "jit(train_step)/transpose(jvp(embedder))/dot_general": "embedder bwd",
        "jit(train_step)/jvp(embedder)/dot_general": "embedder fwd",
        "jit(train_step)/jvp(embedder)/dropout_rng/while/body/closed_call/add": "dropout RNG (fwd)",
        "jit(train_step)/jvp(loss)/mining/jit(_mine_shortlist)/top_k": "mining (NP-MPJPE shortlist)",
        "jit(train_step)/transpose(jvp(loss))/jit(_match_distance_core)/add_any": "loss bwd",
        "jit(train_step)/augment/jit(_uniform)/while": "batch + augmentation",
        "jit(train_step)/optimizer/mul": "optimizer",
        "jit(train_step)/ema/add": "EMA",
        "jit(train_step)/jit(_threefry_split)/while": bench.OTHER_ROW,
        "": bench.OTHER_ROW,
    }
    assert {name: bench.stage_of(name) for name in cases} == cases


def test_profile_of_a_real_step(bench, tmp_path):
    """The tiny preset at width 64 on generated data: the dense layers' matmuls are found with exactly the MLP's
    FLOPs (forward; backward = weight gradients + input gradients of all but the first layer), every named stage
    of the step has ops, and the charged time is bounded by the traced time."""
    import jax

    config = bench.make_config(argparse.Namespace(preset="tiny", set=["model.width=64"]))
    arrays, _ = bench.load_arrays(None, config, str(tmp_path))
    step, state, ema, _, _ = bench.step_function(config, {"xla_backend_optimization_level": 0})
    hlo_text = step.lower(state, ema, arrays).compile().as_text()
    box = {"state": state, "ema": ema}

    def run_step():
        box["state"], box["ema"], metrics = step(box["state"], box["ema"], arrays)
        return box["state"], metrics

    jax.block_until_ready(run_step())
    steps = 4
    prof = bench.profile_ops(run_step, steps, hlo_text, str(tmp_path / "trace"))
    rows = bench.stage_table(prof["ops"])
    poses, model = 2 * config.batch_size, config.model
    forward = poses * bench.mlp_forward_flops(model)
    assert rows["embedder fwd"]["flops"] == forward
    assert rows["embedder bwd"]["flops"] == 2 * forward - poses * 2 * model.input_dim * model.width
    assert rows["embedder fwd"]["matmul_ms"] > 0 and rows["embedder bwd"]["matmul_ms"] > 0
    expected = {row for _, forward_row, backward_row in bench.SCOPE_ROWS for row in (forward_row, backward_row) if row}
    assert expected <= {name for name, row in rows.items() if row["ms"] > 0}
    charged = sum(ms for _, _, ms in prof["ops"].values()) + prof["executor_ms"]
    cores = len(bench.os.sched_getaffinity(0))
    # Not vacuous: most of the process's CPU time while traced is charged to ops (the rest: Python dispatch), and
    # no more than the cores could run.
    assert 0.5 * 1e3 * prof["traced_cpu"] < charged <= 1.02 * cores * 1e3 * prof["traced_wall"]
    assert prof["span_ms"] <= 1e3 * prof["traced_wall"]
