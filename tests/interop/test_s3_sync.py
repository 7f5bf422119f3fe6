"""`push`, `pull` and `serve`'s [[sync]] against a real S3 API (moto's server, started here):
what lands in the bucket is read back with boto3 the way any ODF reader would (refs/head, the
blocks by prevBlockHash, the data slices and checkpoints their AddData names), every object
re-hashed. Then the faults: a push killed part way, a diverged remote, and a link to the
bucket that goes down under device load while the gateway keeps taking reports."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import flatbuffers.table
import pytest

from test_serve_pull import start_with_gps
from test_stp_pull import MULTIHASH_SHA3_256, decode_block, field_bytes, field_scalar, nt

EVENT_ADD_DATA = 1
BUCKET = "center"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "field", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path):
    """A moto S3 server on loopback with an empty bucket (tests/run.sh installs moto[server]); yields a boto3 client."""
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    # As a module of this Python: its `moto_server` script may not be on the PATH (pip --user).
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="field",
                          aws_secret_access_key="secret", region_name="us-east-1")
    deadline = time.time() + 60
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            assert process.poll() is None, (tmp_path / "moto.log").read_text()
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.2)
    client.endpoint = endpoint
    client.port = port
    yield client
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def cli(gateway_bin, tmp_path):
    """`odf-gateway ARGS...` with the S3 credentials, against DATA_DIR; returns the result."""
    def run(data_dir, *args, check=True, stdin=None):
        env = {**os.environ, **CREDENTIALS, "ODF_GATEWAY_DATA_DIR": str(data_dir)}
        result = subprocess.run([gateway_bin, *args], input=stdin, capture_output=True, env=env, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr.decode()
        return result
    return run


def reports(device: str, seqs) -> bytes:
    return b"".join(json.dumps({"device_id": device, "seq": s, "t": "2026-01-01T12:00:00Z",
                                "lat": 49.2, "lon": -123.1}).encode() + b"\n" for s in seqs)


def ingest(cli, data_dir, device, seqs):
    """One commit of vendor A's reports."""
    cli(data_dir, "ingest", "gps", "--stdin", "--source-name", "vendorA", stdin=reports(device, seqs))


def gps_gateway(cli, data_dir, schemas, commits):
    cli(data_dir, "add", str(schemas / "gps.yaml"))
    for device, seqs in commits:
        ingest(cli, data_dir, device, seqs)


def keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def walk(client, prefix: str) -> dict:
    """Reads the dataset at `prefix` as an ODF reader does, re-hashing every object it reaches."""
    def get(key):
        return client.get_object(Bucket=BUCKET, Key=prefix + key)["Body"].read()

    head = get("refs/head").decode("ascii")
    assert head.startswith(MULTIHASH_SHA3_256) and len(head) == 69, repr(head)
    seen = {"blocks": 0, "data": 0, "checkpoints": 0, "records": 0}
    next_hash, expected_seq = head, None
    while next_hash:
        raw = get(f"blocks/{next_hash}")
        assert MULTIHASH_SHA3_256 + hashlib.sha3_256(raw).hexdigest() == next_hash
        block = decode_block(raw)
        if expected_seq is not None:
            assert block["sequence_number"] == expected_seq
        expected_seq = block["sequence_number"] - 1
        seen["blocks"] += 1
        if block["event_type"] == EVENT_ADD_DATA:
            event = block["event"]
            add = flatbuffers.table.Table(event.Bytes, event.Indirect(event.Offset(12) + event.Pos))
            for slot, folder, hash_slot, size_slot in ((8, "data", 6, 10), (10, "checkpoints", 4, 6)):
                offset = add.Offset(slot)
                if not offset:
                    continue
                table = flatbuffers.table.Table(add.Bytes, add.Indirect(offset + add.Pos))
                physical = "f" + field_bytes(table, hash_slot).hex()
                body = get(f"{folder}/{physical}")
                assert MULTIHASH_SHA3_256 + hashlib.sha3_256(body).hexdigest() == physical
                assert len(body) == field_scalar(table, size_slot, nt.Uint64Flags)
                seen[folder] += 1
        next_hash = block["prev"]
    assert expected_seq == -1, "the chain ends at the seed, block 0"
    return seen


def test_push_incrementally_and_read_the_bucket_as_odf(cli, s3, schemas, tmp_path):
    data = tmp_path / "data"
    gps_gateway(cli, data, schemas, [("A-1", range(1, 6))])
    url = f"s3+http://127.0.0.1:{s3.port}/{BUCKET}/field-7/gps/"

    first = cli(data, "push", "gps", url).stdout.decode()
    assert "pushed 8 block(s)" in first, first  # 6 of the manifest, the schema, the data
    assert walk(s3, "field-7/gps/")["data"] == 1
    before = keys(s3, "field-7/gps/")

    assert "is up to date" in cli(data, "push", "gps", url).stdout.decode()
    assert keys(s3, "field-7/gps/") == before

    ingest(cli, data, "A-2", range(1, 4))
    second = cli(data, "push", "gps", url).stdout.decode()
    assert "pushed 1 block(s)" in second, second
    new = keys(s3, "field-7/gps/") - before
    # Exactly the new block, its data slice, and the head (rewritten, not new).
    assert {k.split("/")[2] for k in new} == {"blocks", "data"} and len(new) == 2, new
    assert walk(s3, "field-7/gps/")["data"] == 2

    copy = tmp_path / "copy"
    pulled = cli(copy, "pull", url).stdout.decode()
    assert "gps: created from" in pulled, pulled
    assert "gps: ok" in cli(copy, "verify", "gps").stdout.decode()
    rows = cli(copy, "tail", "gps", "-n", "100", "-o", "json").stdout.decode().splitlines()
    assert len([r for r in rows if r.startswith("{")]) == 8

    # The whole repository (every dataset folder below the prefix), as a restore does it.
    restored = tmp_path / "restored"
    out = cli(restored, "pull", f"s3+http://127.0.0.1:{s3.port}/{BUCKET}/field-7/", "--all").stdout.decode()
    assert "gps: created from" in out, out
    assert "gps: ok" in cli(restored, "verify", "gps").stdout.decode()


def test_a_push_killed_part_way_resumes_and_a_diverged_bucket_is_refused(cli, s3, schemas, tmp_path, gateway_bin):
    data = tmp_path / "data"
    gps_gateway(cli, data, schemas, [(f"A-{d}", range(1, 11)) for d in range(12)])
    url = f"s3+http://127.0.0.1:{s3.port}/{BUCKET}/gps/"
    push = subprocess.Popen([gateway_bin, "push", "gps", url, "--max-rate", "4KiB"],
                            env={**os.environ, **CREDENTIALS, "ODF_GATEWAY_DATA_DIR": str(data)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len([k for k in keys(s3, "gps/data/")]) < 3:
        assert push.poll() is None, "the push ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    push.send_signal(signal.SIGKILL)
    push.wait()
    sent = keys(s3, "gps/")
    assert "gps/refs/head" not in sent, "the head is written last"

    resumed = cli(data, "push", "gps", url).stdout.decode()
    assert "already there" in resumed, resumed
    assert walk(s3, "gps/")["data"] == 12

    other = tmp_path / "other"
    gps_gateway(cli, other, schemas, [("B-1", range(1, 3))])
    head = s3.get_object(Bucket=BUCKET, Key="gps/refs/head")["Body"].read()
    refused = cli(other, "push", "gps", url, check=False)
    assert refused.returncode != 0 and b"have diverged" in refused.stderr, refused.stderr
    assert s3.get_object(Bucket=BUCKET, Key="gps/refs/head")["Body"].read() == head


class Link:
    """A TCP relay to the S3 server that can be cut: while down, connections are closed as
    soon as they arrive and those open are cut, as when an LTE modem loses its carrier."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self):
        self.up = False
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open.clear()

    def close(self):
        self.down()
        self.server.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_serve_syncs_through_a_link_that_goes_down(gateway_bin, cli, s3, schemas, tmp_path, monkeypatch):
    link = Link(s3.port)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    sync = (f'[[sync]]\nurl = "s3+http://127.0.0.1:{link.port}/{BUCKET}/field-7/{{dataset}}/"\n'
            'interval = "1s"\nmax_backoff = "2s"\n')
    process, base, addresses = start_with_gps(gateway_bin, tmp_path, schemas, sync)
    sim = os.path.join(os.path.dirname(gateway_bin), "device-sim")
    try:
        load = subprocess.Popen(
            [sim, "load", "--devices", "12", "--duration", "20s", "--host", "127.0.0.1",
             "--http-port", addresses["http"][0].rsplit(":", 1)[1],
             "--mqtt-port", addresses["mqtt"]["tcp"][0].rsplit(":", 1)[1],
             "--coap-port", addresses["coap"]["udp"][0].rsplit(":", 1)[1], "--status-every", "1h"],
            cwd=tmp_path, stdout=open(tmp_path / "sim.log", "wb"), stderr=subprocess.STDOUT)
        time.sleep(5)
        link.down()
        time.sleep(4)
        status = get_json(f"{base}/datasets/gps")["sync"][0]
        assert status["failures"] > 0 and status["last_error"], status
        link.up = True
        assert load.wait(timeout=120) == 0, (tmp_path / "sim.log").read_text()

        # Every acknowledged report committed (nothing pending), and that head on the remote.
        deadline = time.time() + 60
        while True:
            dataset = get_json(f"{base}/datasets/gps")
            status = dataset["sync"][0]
            if dataset["pipeline"]["pending_bytes"] == 0 and status["remote_head"] == dataset["head"]:
                break
            assert time.time() < deadline, status
            time.sleep(0.5)
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
        assert 'odf_sync_failures_total{dataset="gps",remote=' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()
        link.close()

    walk(s3, "field-7/gps/")
    copy = tmp_path / "copy"
    cli(copy, "pull", f"s3+http://127.0.0.1:{s3.port}/{BUCKET}/field-7/gps/")
    verdict = subprocess.run([sim, "verify", "--data-dir", str(copy), "--gateway-bin", gateway_bin],
                             cwd=tmp_path, capture_output=True, timeout=300)
    assert verdict.returncode == 0, verdict.stdout.decode() + verdict.stderr.decode()
