"""Kafka intake against a real Kafka-compatible broker (tansu, started here; tests/run.sh
installs it), with records produced by a client we did not write (confluent-kafka, i.e.
librdkafka): topics routed by captures into the sources of `gps` in NdJson, CSV and CBOR, a
poison record quarantined with its offset while the rest of its partition is committed,
every record committed exactly once across kill -9 of the gateway, and a broker restarted
mid-stream."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import boto3
import cbor2
import pytest
from confluent_kafka import Producer

from test_serve_pull import get, start

TANSU = os.environ.get("TANSU_BIN") or shutil.which("tansu")

# An Append source: a record committed twice would show as two rows (a Ledger would hide it).
EVENTS = """kind: DatasetSnapshot
version: 1
content:
  name: events
  kind: Root
  metadata:
    - kind: AddPushSource
      sourceName: counter
      read:
        kind: NdJson
        ddlSchema:
          - n BIGINT NOT NULL
          - t TIMESTAMP NOT NULL
      merge:
        kind: Append
    - kind: SetVocab
      eventTimeColumn: t
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp_path, env=None, storage="memory://tansu/", name="broker"):
        assert TANSU, "tansu is not installed (tests/run.sh installs it, or set TANSU_BIN)"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.args = [TANSU, "broker", "--listener-url", f"tcp://{self.address}",
                     "--advertised-listener-url", f"tcp://{self.address}", "--storage-engine", storage]
        self.env = {**os.environ, **(env or {})}
        self.log = tmp_path / f"{name}.log"
        self.start()

    def start(self):
        self.process = subprocess.Popen(self.args, env=self.env, stdout=open(self.log, "ab"),
                                        stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                assert time.time() < deadline, "tansu did not start"
                time.sleep(0.05)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)

    def create_topic(self, name, partitions):
        subprocess.run([TANSU, "topic", "create", name, "--partitions", str(partitions),
                        "--broker", f"tcp://{self.address}"], check=True, capture_output=True, env=self.env)

    def producer(self):
        return Producer({"bootstrap.servers": self.address, "linger.ms": 5})


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path)
    yield broker
    broker.stop()


def query(base, sql):
    """The rows of a query; none while the dataset has no data yet (a 400 that says so)."""
    request = urllib.request.Request(f"{base}/query", data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        if e.code == 400 and "has no data yet" in body:
            return []
        raise AssertionError(f"{e.code}: {body}") from e


def wait_for(what, check, until=bool, timeout=120):
    """Calls `check` until `until` holds for what it returns; returns that."""
    deadline = time.time() + timeout
    while True:
        value = check()
        if until(value):
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def serve(gateway_bin, root, manifests, config):
    (root / "schemas").mkdir(exist_ok=True)
    for name, text in manifests.items():
        (root / "schemas" / name).write_text(text)
    return start(gateway_bin, root, config)


def stop(process, root):
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, (root / "gateway.log").read_text()


def test_topics_routed_into_sources_in_each_format(gateway_bin, tmp_path, schemas, broker):
    for vendor in ("vendorA", "vendorB", "vendorC"):
        broker.create_topic(f"telemetry.{vendor}.gps", 1)
    config = f"""
[[route]]
pattern = "telemetry.{{source}}.gps"
dataset = "gps"
transports = ["kafka"]

[[kafka]]
brokers = "{broker.address}"
topic_pattern = "telemetry\\\\.vendor[A-C]\\\\.gps"
columns = {{ device_id = "key" }}
"""
    process, base = serve(gateway_bin, tmp_path, {"gps.yaml": (schemas / "gps.yaml").read_text()}, config)
    try:
        producer = broker.producer()
        # vendorA: NdJson whose device id is the record's key, not in the payload.
        for seq in range(1, 4):
            report = {"seq": seq, "t": f"2026-01-01T12:00:0{seq}Z", "lat": 49.2, "lon": -123.1}
            producer.produce("telemetry.vendorA.gps", key=b"A-7", value=json.dumps(report).encode())
            if seq == 2:
                producer.produce("telemetry.vendorA.gps", key=b"A-7", value=b'{"seq": "not a number"')
        # vendorB: its own CSV.
        producer.produce("telemetry.vendorB.gps", value=b"imei,ts,latitude,longitude,speed_knots,course,battery,counter\n"
                         b"356938035643809,1767268800000,49.28,-123.12,17.0,270.0,87,42\n")
        # vendorC: CBOR maps, declared by the content-type header (its source reads NdJson).
        cbor = cbor2.dumps({"i": "C-0007", "n": 17, "ts": 1767268800, "la": 49.28, "lo": -123.12, "v": 8.75})
        producer.produce("telemetry.vendorC.gps", value=cbor, headers={"content-type": b"application/cbor"})
        assert producer.flush(30) == 0

        rows = wait_for("every good record committed",
                        lambda: query(base, "SELECT device_id, seq FROM gps ORDER BY device_id, seq"),
                        until=lambda rows: len(rows) >= 5)
        assert [(r["device_id"], r["seq"]) for r in rows] == [
            ("356938035643809", 42), ("A-7", 1), ("A-7", 2), ("A-7", 3), ("C-0007", 17)], rows

        quarantined = subprocess.run([gateway_bin, "quarantine", "list", "gps", "--data-dir", str(tmp_path / "data")],
                                     capture_output=True, text=True, check=True).stdout
        assert "kafka telemetry.vendorA.gps[0]@2" in quarantined, quarantined

        ready = json.loads(get(f"{base}/readyz"))
        partitions = ready["consumers"]["kafka[0]"]["partitions"]
        assert {(p["topic"], p["committed"], p["lag"]) for p in partitions} == {
            ("telemetry.vendorA.gps", 4, 0), ("telemetry.vendorB.gps", 1, 0), ("telemetry.vendorC.gps", 1, 0)}, ready
        metrics = get(f"{base}/metrics").decode()
        assert 'odf_kafka_records_total{consumer="kafka[0]",dataset="gps",topic="telemetry.vendorA.gps"} 4' in metrics
    finally:
        stop(process, tmp_path)


def produce_numbered(broker, topic, numbers, pause=0.0, one_per_batch=False):
    producer = broker.producer()
    for n in numbers:
        record = {"n": n, "t": "2026-01-01T00:00:00Z"}
        producer.produce(topic, key=str(n).encode(), value=json.dumps(record).encode())
        if one_per_batch:
            producer.flush(10)
        if pause and n % 50 == 0:
            producer.poll(0)
            time.sleep(pause)
    assert producer.flush(60) == 0


def committed_numbers(base):
    rows = query(base, "SELECT count(*) AS total, count(DISTINCT n) AS distinct_n, min(n) AS lo, max(n) AS hi FROM events")
    return rows[0] if rows else {"total": 0}


KAFKA_EVENTS = """
[[kafka]]
brokers = "{address}"
topic = "numbers"
dataset = "events"
source = "counter"
"""


def test_every_record_committed_exactly_once_across_kill_9(gateway_bin, tmp_path, broker):
    total = 4000
    broker.create_topic("numbers", 4)
    config = KAFKA_EVENTS.format(address=broker.address)
    producing = threading.Thread(target=produce_numbered, args=(broker, "numbers", range(total), 0.05))
    producing.start()
    rng = random.Random(7)
    process, base = serve(gateway_bin, tmp_path, {"events.yaml": EVENTS}, config)
    # What was committed at each kill: the kills must land while it consumes.
    at_kills = []
    try:
        while producing.is_alive() or len(at_kills) < 4:
            time.sleep(rng.uniform(0.2, 1.0))
            at_kills.append(committed_numbers(base)["total"])
            process.send_signal(signal.SIGKILL)
            process.wait()
            (tmp_path / "addresses.json").unlink()
            process, base = start(gateway_bin, tmp_path, config)
        producing.join()
        counts = wait_for("every record committed", lambda: committed_numbers(base),
                          until=lambda c: c["total"] >= total)
        assert counts == {"total": total, "distinct_n": total, "lo": 0, "hi": total - 1}, counts
        assert any(0 < n < total for n in at_kills), at_kills
    finally:
        stop(process, tmp_path)


def test_broker_restart_mid_stream(gateway_bin, tmp_path):
    # The broker keeps its topics in S3 (moto, on loopback) so that they outlive its restart.
    moto_port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{moto_port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    wait_for("moto", lambda: _try(lambda: s3.create_bucket(Bucket="tansu")), timeout=60)
    env = {"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    broker = Broker(tmp_path, env=env, storage="s3://tansu/")
    process = None
    try:
        broker.create_topic("numbers", 2)
        produce_numbered(broker, "numbers", range(0, 500))
        process, base = serve(gateway_bin, tmp_path, {"events.yaml": EVENTS}, KAFKA_EVENTS.format(address=broker.address))
        wait_for("the first half", lambda: committed_numbers(base)["total"] >= 500)

        broker.stop()
        time.sleep(2)  # the consumer finds the broker gone and backs off
        broker.start()
        produce_numbered(broker, "numbers", range(500, 1000))
        counts = wait_for("the second half", lambda: committed_numbers(base),
                          until=lambda c: c["total"] >= 1000, timeout=180)
        assert counts == {"total": 1000, "distinct_n": 1000, "lo": 0, "hi": 999}, counts
    finally:
        if process:
            stop(process, tmp_path)
        broker.stop()
        moto.terminate()
        moto.wait(timeout=30)


def _try(action):
    try:
        action()
        return True
    except Exception:
        return False


def consumer_partitions(base):
    ready = json.loads(get(f"{base}/readyz"))
    return ready["consumers"].get("kafka[0]", {}).get("partitions", [])


def test_a_new_topic_is_consumed_at_the_next_refresh(gateway_bin, tmp_path, broker):
    broker.create_topic("numbers.a", 2)
    config = f"""
[[kafka]]
brokers = "{broker.address}"
topic_pattern = 'numbers\\..*'
dataset = "events"
source = "counter"
refresh = "1s"
"""
    process, base = serve(gateway_bin, tmp_path, {"events.yaml": EVENTS}, config)
    try:
        produce_numbered(broker, "numbers.a", range(0, 300))
        wait_for("the first topic", lambda: committed_numbers(base)["total"] >= 300)
        # The streams start again from the chain when the topics change: nothing twice.
        broker.create_topic("numbers.b", 3)
        produce_numbered(broker, "numbers.b", range(300, 600))
        counts = wait_for("the new topic", lambda: committed_numbers(base), until=lambda c: c["total"] >= 600)
        assert counts == {"total": 600, "distinct_n": 600, "lo": 0, "hi": 599}, counts
        topics = {p["topic"] for p in consumer_partitions(base)}
        assert topics == {"numbers.a", "numbers.b"}, topics
    finally:
        stop(process, tmp_path)


def test_start_latest_skips_the_past_but_nothing_after_it(gateway_bin, tmp_path, broker):
    broker.create_topic("numbers", 2)
    # Before the first start: skipped. One record a batch: tansu answers `latest` with the
    # last batch's first offset + 1, not the partition's end (Apache Kafka's answer).
    produce_numbered(broker, "numbers", range(0, 100), one_per_batch=True)
    config = KAFKA_EVENTS.format(address=broker.address) + 'start = "latest"\n'
    process, base = serve(gateway_bin, tmp_path, {"events.yaml": EVENTS}, config)
    # Where it starts is committed before anything is consumed ...
    wait_for("the start offsets", lambda: consumer_partitions(base),
             until=lambda ps: len(ps) == 2 and all(p["committed"] is not None for p in ps))
    process.send_signal(signal.SIGKILL)
    process.wait()
    # ... so what comes while it is down is not skipped when `latest` is asked again.
    produce_numbered(broker, "numbers", range(100, 200))
    (tmp_path / "addresses.json").unlink()
    process, base = start(gateway_bin, tmp_path, config)
    try:
        counts = wait_for("the records after the start", lambda: committed_numbers(base),
                          until=lambda c: c["total"] >= 100)
        time.sleep(1)  # nothing more arrives
        assert committed_numbers(base) == {"total": 100, "distinct_n": 100, "lo": 100, "hi": 199}, counts
    finally:
        stop(process, tmp_path)
