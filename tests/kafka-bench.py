#!/usr/bin/env python3
"""Kafka intake benchmark (not a test): records per second from produced to committed, with
one partition and with eight, beside the peer's limit: a Kafka client (confluent-kafka,
librdkafka) reading the same topic from the same broker and discarding it.

    tests/kafka-bench.py [--records 200000] [--gateway target/release/odf-gateway]

It starts a tansu broker (TANSU_BIN, or tansu on the PATH: tests/run.sh installs it) with
in-memory storage, produces vendorA reports (NdJson, ~150 bytes, 1,000 devices) into a
topic, times the peer reading them all, then starts `odf-gateway serve` with a `[[kafka]]`
entry into gps/vendorA (Ledger merge, the shipped schemas) and times until `/readyz` says
every record is committed. The gateway's CPU comes from /proc/PID/stat and its peak RSS from
VmHWM; the broker shares the two cores, so compare ratios, not absolute figures.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = pathlib.Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                sys.exit("the broker did not start")
            time.sleep(0.05)


def produce(address, topic, partitions, records):
    producer = Producer({"bootstrap.servers": address, "linger.ms": 20, "batch.num.messages": 10000})
    for n in range(records):
        report = {"device_id": f"A-{n % 1000:04}", "seq": n // 1000, "t": "2026-01-01T12:00:00Z",
                  "lat": 49.28, "lon": -123.12, "speed_kmh": 31.5, "heading": 270, "battery_pct": 87}
        while True:
            try:
                producer.produce(topic, value=json.dumps(report).encode(), partition=n % partitions)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def peer_read(address, topic, partitions, records):
    consumer = Consumer({"bootstrap.servers": address, "group.id": "bench", "enable.auto.commit": False,
                         "fetch.max.bytes": 8 << 20})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    started, seen = time.time(), 0
    while seen < records:
        for message in consumer.consume(10000, 1.0):
            if not message.error():
                seen += 1
    elapsed = time.time() - started
    consumer.close()
    return records / elapsed


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gateway_read(gateway, address, topic, records, root, fetch_bytes, max_wait):
    (root / "schemas").mkdir()
    shutil.copy(ROOT / "schemas" / "gps.yaml", root / "schemas" / "gps.yaml")
    http = free_port()
    config = root / "gateway.toml"
    config.write_text(f"""data_dir = "{root / 'data'}"
schemas = "{root / 'schemas'}"
[http]
listen = ["127.0.0.1:{http}"]
[mqtt]
enabled = false
[coap]
enabled = false
[anonymous]
query = ["*"]

[[kafka]]
brokers = "{address}"
topic = "{topic}"
dataset = "gps"
source = "vendorA"
fetch_bytes = "{fetch_bytes}"
max_wait = "{max_wait}"
""")
    process = subprocess.Popen([gateway, "serve", "--config", str(config)], stderr=open(root / "gateway.log", "wb"))
    base = f"http://127.0.0.1:{http}"
    started = time.time()
    try:
        while True:
            time.sleep(0.2)
            if process.poll() is not None:
                sys.exit((root / "gateway.log").read_text())
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=10) as reply:
                    ready = json.loads(reply.read())
            except OSError:
                continue
            partitions = ready.get("consumers", {}).get("kafka[0]", {}).get("partitions", [])
            committed = sum(p["committed"] or 0 for p in partitions)
            if committed >= records:
                break
        elapsed = time.time() - started
        cpu, rss = cpu_seconds(process.pid), peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    return records / elapsed, cpu / records * 1e6, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--gateway", default=str(ROOT / "target" / "release" / "odf-gateway"))
    parser.add_argument("--fetch-bytes", default="1 MiB", help="the [[kafka]] entry's fetch_bytes")
    parser.add_argument("--max-wait", default="500ms", help="the [[kafka]] entry's max_wait")
    parser.add_argument("--partitions", default="1,8", help="the runs, by partition count")
    args = parser.parse_args()
    tansu = os.environ.get("TANSU_BIN") or shutil.which("tansu")
    if not tansu:
        sys.exit("no tansu: set TANSU_BIN (tests/run.sh installs it)")
    rows = []
    for partitions in [int(p) for p in args.partitions.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            root = pathlib.Path(folder)
            port = free_port()
            address = f"127.0.0.1:{port}"
            broker = subprocess.Popen([tansu, "broker", "--listener-url", f"tcp://{address}",
                                       "--advertised-listener-url", f"tcp://{address}",
                                       "--storage-engine", "memory://tansu/"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(port, broker)
                topic = f"bench.p{partitions}"
                subprocess.run([tansu, "topic", "create", topic, "--partitions", str(partitions),
                                "--broker", f"tcp://{address}"], check=True, capture_output=True)
                produce(address, topic, partitions, args.records)
                peer = peer_read(address, topic, partitions, args.records)
                rate, cpu_us, rss = gateway_read(args.gateway, address, topic, args.records, root, args.fetch_bytes, args.max_wait)
            finally:
                broker.terminate()
                broker.wait(timeout=30)
        rows.append((partitions, peer, rate, cpu_us, rss))
    print(f"\n{args.records:,} vendorA reports per run, tansu in memory, fetch_bytes {args.fetch_bytes}, max_wait {args.max_wait}, "
          "2 cores shared by broker, peer and gateway\n")
    print("| partitions | peer reads/s (confluent-kafka, discards) | gateway commits/s | ratio | gateway CPU per record | gateway peak RSS |")
    print("|---|---|---|---|---|---|")
    for partitions, peer, rate, cpu_us, rss in rows:
        print(f"| {partitions} | {peer:,.0f} | {rate:,.0f} | {rate / peer:.2f} | {cpu_us:.1f} µs | {rss:.0f} MB |")


if __name__ == "__main__":
    main()
