"""A running `odf-gateway serve` is pulled over the ODF Simple Transfer Protocol by a client
that shares no code with it: data is pushed over HTTP, then the client follows refs/head and
prevBlockHash, checks every block's SHA3-256 against its name, finds the data slices in the
AddData blocks with the reference `flatbuffers` runtime, downloads each, checks its hash and
reads it with pyarrow."""

import hashlib
import io
import json
import shutil
import signal
import subprocess
import time
import urllib.request

import flatbuffers.table
import pyarrow.parquet as pq

from test_stp_pull import MULTIHASH_SHA3_256, decode_block, field_bytes

EVENT_ADD_DATA = 1


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200, response.status
        return json.loads(response.read())


def start(gateway_bin, root, extra_config=""):
    config = root / "gateway.toml"
    config.write_text('[http]\nlisten = ["127.0.0.1:0"]\n[mqtt]\nlisten = ["127.0.0.1:0"]\nws_listen = ["127.0.0.1:0"]\n[coap]\nlisten = ["127.0.0.1:0", "[::1]:0"]\n[pipeline]\nflush_interval = "100ms"\n'
                      '[anonymous]\nwrite = ["*"]\nquery = ["*"]\n' + extra_config)
    addresses = root / "addresses.json"
    process = subprocess.Popen(
        [gateway_bin, "serve", "--config", str(config), "--addresses-file", str(addresses), "--data-dir", str(root / "data")],
        cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "gateway.log", "wb"))
    deadline = time.time() + 120
    while not addresses.exists():
        assert process.poll() is None, (root / "gateway.log").read_text()
        assert time.time() < deadline, "the gateway did not start"
        time.sleep(0.05)
    base = "http://" + json.loads(addresses.read_text())["http"][0]
    while True:
        try:
            if json.loads(get(base + "/readyz"))["ready"]:
                return process, base
        except OSError:
            pass
        assert time.time() < deadline, "the gateway did not get ready"
        time.sleep(0.05)


def start_with_gps(gateway_bin, root, schemas, extra_config=""):
    """`start` with the shipped GPS manifest; also returns the listeners' addresses."""
    (root / "schemas").mkdir()
    shutil.copy(schemas / "gps.yaml", root / "schemas" / "gps.yaml")
    process, base = start(gateway_bin, root, extra_config)
    return process, base, json.loads((root / "addresses.json").read_text())


def test_pull_from_a_running_gateway(gateway_bin, tmp_path, schemas):
    process, base, _ = start_with_gps(gateway_bin, tmp_path, schemas)
    try:
        reports = b"".join(
            json.dumps({"device_id": f"A-{i}", "seq": i, "t": "2026-01-01T12:00:00Z", "lat": 49.2, "lon": -123.1}).encode() + b"\n"
            for i in range(25))
        reply = post(f"{base}/datasets/gps/sources/vendorA?wait=commit", reports, "application/x-ndjson")
        assert reply["accepted"] == 25 and reply["committed"], reply

        dataset = f"{base}/datasets/gps"
        next_hash = get(f"{dataset}/refs/head").decode("ascii")
        rows = 0
        blocks = 0
        while next_hash:
            raw = get(f"{dataset}/blocks/{next_hash}")
            assert MULTIHASH_SHA3_256 + hashlib.sha3_256(raw).hexdigest() == next_hash
            block = decode_block(raw)
            blocks += 1
            if block["event_type"] == EVENT_ADD_DATA:
                event = block["event"]
                add_data = flatbuffers.table.Table(event.Bytes, event.Indirect(event.Offset(12) + event.Pos))
                offset = add_data.Offset(8)
                if offset:
                    new_data = flatbuffers.table.Table(add_data.Bytes, add_data.Indirect(offset + add_data.Pos))
                    physical = "f" + field_bytes(new_data, 6).hex()
                    data = get(f"{dataset}/data/{physical}")
                    assert MULTIHASH_SHA3_256 + hashlib.sha3_256(data).hexdigest() == physical
                    rows += pq.read_table(io.BytesIO(data)).num_rows
            next_hash = block["prev"]
        assert rows == 25 and blocks >= 8, (rows, blocks)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()
