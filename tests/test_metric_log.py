"""Training curves (`--log_backend`): the TensorBoard event files read back by readers that share no code with the
writer (a bit-at-a-time CRC32C, Google's protobuf runtime, TensorBoard's own EventAccumulator), the W&B path and
its clear error without the package. A training run writing every metric of every iteration to jsonl and TensorBoard,
interrupted and resumed: `tests/test_sequence.py::test_resume_equals_uninterrupted` (`check_curves_agree`)."""

from __future__ import annotations

import json
import math
import struct
import sys

import numpy as np
import pytest

from jaxtrade import metric_log as L
from jaxtrade import tfevents
from jaxtrade.errors import InputError


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C one bit at a time (the writer uses a byte table)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return ~crc & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot << 15) | (rot >> 17)) & 0xFFFFFFFF


def read_records(path) -> list[bytes]:
    """TFRecord framing, every CRC checked; a bad one is an AssertionError naming the record."""
    data, records, pos = path.read_bytes(), [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert unmask(length_crc) == crc32c_bitwise(header), f"record {len(records)}: bad length CRC"
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert unmask(body_crc) == crc32c_bitwise(body), f"record {len(records)}: bad data CRC"
        records.append(body)
        pos += 16 + length
    return records


def event_class():
    """tensorflow.Event (the fields TensorBoard's scalars use) built from a descriptor for Google's protobuf."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="jaxtrade_test_event.proto", package="jt")

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for number, fname, ftype, label, type_name in fields:
            m.field.add(name=fname, number=number, type=ftype, label=label, type_name=type_name)

    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    # Field numbers as tensorflow/core/util/event.proto and summary.proto have them.
    message("Value", [(1, "tag", f.TYPE_STRING, opt, None), (2, "simple_value", f.TYPE_FLOAT, opt, None)])
    message("Summary", [(1, "value", f.TYPE_MESSAGE, rep, ".jt.Value")])
    message("SessionLog", [(1, "status", f.TYPE_INT32, opt, None)])
    message("Event", [(1, "wall_time", f.TYPE_DOUBLE, opt, None), (2, "step", f.TYPE_INT64, opt, None),
                      (3, "file_version", f.TYPE_STRING, opt, None), (4, "graph_def", f.TYPE_BYTES, opt, None),
                      (5, "summary", f.TYPE_MESSAGE, opt, ".jt.Summary"), (6, "log_message", f.TYPE_BYTES, opt, None),
                      (7, "session_log", f.TYPE_MESSAGE, opt, ".jt.SessionLog")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("jt.Event"))


def read_events(logdir) -> list:
    Event = event_class()
    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for record in read_records(path):
            event = Event()
            event.ParseFromString(record)
            events.append(event)
    return events


def scalars_of(events) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for e in events:
        for v in e.summary.value:
            out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def test_crc32c_known_answers():
    # RFC 3720 B.4 and the usual check value: independent of both implementations here.
    assert tfevents.crc32c(b"123456789") == 0xE3069283
    assert tfevents.crc32c(bytes(32)) == 0x8A9136AA and tfevents.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c_bitwise(b"123456789") == 0xE3069283


def test_event_file_reads_back_with_checked_crcs(tmp_path):
    w = tfevents.EventFileWriter(tmp_path)
    w.add_scalars(1, {"loss": 0.5, "win_rate": 0.25}, wall_time=100.0)
    w.add_scalars(2**40, {"loss": -1.5e-3, "nan_metric": math.nan})
    w.close()
    events = read_events(tmp_path)
    assert events[0].file_version == "brain.Event:2" and not events[0].summary.value
    assert events[1].wall_time == 100.0 and events[1].step == 1
    assert scalars_of(events)["loss"] == [(1, 0.5), (2**40, pytest.approx(-1.5e-3))]
    assert math.isnan(scalars_of(events)["nan_metric"][0][1])
    # A flipped byte is caught by the reader's CRC check (so the check above is not vacuous).
    path = next(tmp_path.glob("events.out.tfevents.*"))
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="bad data CRC"):
        read_records(path)


def test_tensorboard_reads_the_events(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    writer = L.open_writer(("tensorboard",), tmp_path, "SYM/ppo")
    for it in range(1, 6):
        writer.write(it, {"mean_episode_return": np.float32(0.1 * it), "usage": np.array([0.2, 0.4])})
    writer.close()
    acc = accumulator.EventAccumulator(str(tmp_path / "tensorboard" / "SYM" / "ppo"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"mean_episode_return", "usage"}
    got = [(s.step, s.value) for s in acc.Scalars("mean_episode_return")]
    assert got == [(it, pytest.approx(0.1 * it, rel=1e-6)) for it in range(1, 6)]
    assert [s.value for s in acc.Scalars("usage")] == [pytest.approx(0.3)] * 5  # an array is averaged


def test_a_resumed_run_replaces_what_the_interrupted_one_logged_past_its_checkpoint(tmp_path):
    """Killed after logging iterations 1-3 with a checkpoint at 2: the resumed run's 3 and 4 replace the old 3, in
    metrics.jsonl and in what TensorBoard shows (its restart marker)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    jsonl = tmp_path / "S" / "ppo" / "metrics.jsonl"
    first = L.open_writer(("jsonl", "tensorboard"), tmp_path, "S/ppo", jsonl_path=jsonl)
    for it in (1, 2, 3):
        first.write(it, {"iteration": it, "loss": float(it)})
    first.close()
    with jsonl.open("a") as f:
        f.write('{"iteration": 4, "lo')  # torn by the kill
    resumed = L.open_writer(("jsonl", "tensorboard"), tmp_path, "S/ppo", jsonl_path=jsonl, resume_at=2)
    for it in (3, 4):
        resumed.write(it, {"iteration": it, "loss": 10.0 * it})
    resumed.close()
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["iteration"], r["loss"]) for r in lines] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    acc = accumulator.EventAccumulator(str(tmp_path / "tensorboard" / "S" / "ppo"))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    events = read_events(tmp_path / "tensorboard" / "S" / "ppo")  # the marker, decoded independently
    assert [(e.step, e.session_log.status) for e in events if e.HasField("session_log")] == [(3, 1)]


def test_backend_flags_are_checked_before_training(monkeypatch):
    with pytest.raises(InputError, match=r"--log_backend: unknown backend 'tensorbord' \(choose from jsonl, "):
        L.check_backends(["tensorbord"])
    assert L.check_backends(["jsonl", "tensorboard", "jsonl"]) == ("jsonl", "tensorboard")
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"--log_backend wandb: the 'wandb' package is not installed \(pip install "
                                         r"'jaxtrade\[logging\]'"):
        L.check_backends(["wandb"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as when it is not installed
    with pytest.raises(InputError, match="the 'wandb' package is not installed"):
        L.WandbSink(L.Path("/nonexistent"), "S/ppo", None)


def test_wandb_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert L.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert L.wandb_mode() == "disabled"


def wandb_history(run_file) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} from an offline run's `.wandb` file: W&B's 7-byte header, then LevelDB-log records
    (32 KiB blocks, 7-byte chunk headers: CRC, length, type FULL/FIRST/MIDDLE/LAST) of `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, records, pending = run_file.read_bytes(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    history = {}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[record.history.step.num] = items
    return history


@pytest.mark.slow
def test_wandb_offline_run_records_the_metrics(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    writer = L.open_writer(("wandb",), tmp_path / "run1", "SYM/ppo", config={"ppo": {"learning_rate": 1e-4}})
    for it in (1, 2, 3):
        writer.write(it, {"policy_loss": 0.5 / it})
    writer.close()
    wandb.teardown()  # W&B's service process completes the run file when it stops (at exit in a real run)
    runs = list((tmp_path / "run1" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = wandb_history(next(runs[0].glob("*.wandb")))
    assert sorted(history) == [1, 2, 3]
    assert [history[it]["policy_loss"] for it in (1, 2, 3)] == [pytest.approx(0.5 / it) for it in (1, 2, 3)]


def test_split_members_gives_each_member_its_row():
    members = L.split_members({"loss": np.array([1.0, 2.0, 3.0]), "iteration": np.int32(7)}, 3)
    assert [m["loss"] for m in members] == [1.0, 2.0, 3.0] and all(m["iteration"] == 7 for m in members)


def check_curves_agree(run_dir, symbol: str, stage: str, iterations: list[int]) -> None:
    """The stage's metrics.jsonl and TensorBoard events hold the same metrics, values and iterations."""
    lines = [json.loads(line) for line in (run_dir / symbol / stage / "metrics.jsonl").read_text().splitlines()]
    tb = scalars_of(read_events(run_dir / "tensorboard" / symbol / stage))
    assert [rec["iteration"] for rec in lines] == iterations
    numeric = {k for k in lines[0] if k not in ("symbol", "stage")}
    assert {"policy_loss", "value_loss", "entropy", "mean_episode_return", "env_steps", "steps_per_s"} <= numeric
    assert set(tb) == numeric
    for name in numeric:
        assert [step for step, _ in tb[name]] == iterations, name
        for rec, (_, value) in zip(lines, tb[name]):
            if rec[name] is None:
                assert not math.isfinite(value), name
            else:
                assert value == pytest.approx(rec[name], rel=1e-6, abs=1e-30), name
