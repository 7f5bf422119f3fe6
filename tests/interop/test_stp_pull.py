"""A dataset folder written by the gateway, served as plain static files, is pulled over the
ODF Simple Transfer Protocol by a client that shares no code with the gateway: it follows
refs/head and prevBlockHash, checks every block's SHA3-256 against its name, and reads the
FlatBuffers with the reference `flatbuffers` runtime."""

import functools
import hashlib
import http.server
import threading
import urllib.request

import flatbuffers.number_types as nt
import flatbuffers.table
import flatbuffers.encode
import pytest

MULTIHASH_SHA3_256 = "f1620"
METADATA_BLOCK_KIND = 0x400000
# Positions in the MetadataEvent union (1-based).
EVENT_SEED, EVENT_SET_VOCAB, EVENT_SET_INFO, EVENT_ADD_PUSH_SOURCE = 3, 6, 8, 11


@pytest.fixture
def served(gateway, schemas):
    """The gps dataset folder on an HTTP static file server bound to 127.0.0.1:0."""
    gateway("add", str(schemas / "gps.yaml"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(gateway.data_dir / "gps"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def root_table(buf: bytes) -> flatbuffers.table.Table:
    buf = bytearray(buf)
    return flatbuffers.table.Table(buf, flatbuffers.encode.Get(nt.UOffsetTFlags.packer_type, buf, 0))


def field_bytes(table: flatbuffers.table.Table, slot: int) -> bytes | None:
    offset = table.Offset(slot)
    if not offset:
        return None
    start = table.Vector(offset)
    return bytes(table.Bytes[start:start + table.VectorLen(offset)])


def field_scalar(table: flatbuffers.table.Table, slot: int, flags, default=0):
    offset = table.Offset(slot)
    return table.Get(flags, offset + table.Pos) if offset else default


def decode_block(raw: bytes) -> dict:
    manifest = root_table(raw)
    assert field_scalar(manifest, 4, nt.Int64Flags) == METADATA_BLOCK_KIND
    assert field_scalar(manifest, 6, nt.Int32Flags) == 3
    content = field_bytes(manifest, 8)
    block = root_table(content)
    prev = field_bytes(block, 6)
    return {
        "prev": MULTIHASH_SHA3_256 + prev[2:].hex() if prev else None,
        "sequence_number": field_scalar(block, 8, nt.Uint64Flags),
        "event_type": field_scalar(block, 10, nt.Uint8Flags),
        "event": block,
    }


def test_pull_the_whole_chain_over_http(served):
    head = get(f"{served}/refs/head").decode("ascii")
    assert head.startswith(MULTIHASH_SHA3_256) and len(head) == 69, repr(head)

    chain = []
    next_hash = head
    while next_hash:
        raw = get(f"{served}/blocks/{next_hash}")
        assert MULTIHASH_SHA3_256 + hashlib.sha3_256(raw).hexdigest() == next_hash
        block = decode_block(raw)
        chain.append(block)
        next_hash = block["prev"]

    assert [b["sequence_number"] for b in chain] == [5, 4, 3, 2, 1, 0]
    assert [b["event_type"] for b in chain] == [
        EVENT_SET_VOCAB, EVENT_ADD_PUSH_SOURCE, EVENT_ADD_PUSH_SOURCE, EVENT_ADD_PUSH_SOURCE, EVENT_SET_INFO, EVENT_SEED,
    ]

    # The seed names the dataset: multicodec ed25519-pub (varint ed 01) and a 32-byte key.
    seed_block = chain[-1]["event"]
    seed = flatbuffers.table.Table(seed_block.Bytes, seed_block.Indirect(seed_block.Offset(12) + seed_block.Pos))
    dataset_id = field_bytes(seed, 4)
    assert dataset_id[:2] == b"\xed\x01" and len(dataset_id) == 34


def test_the_served_folder_holds_no_secret(served, gateway):
    """The identity key stays outside the served folder, beside the datasets."""
    keys = list((gateway.data_dir / ".keys").glob("fed01*.key"))
    assert len(keys) == 1
    secret = keys[0].read_text().strip()
    served_files = [p for p in (gateway.data_dir / "gps").rglob("*") if p.is_file()]
    assert served_files and all(secret.encode() not in p.read_bytes() for p in served_files)
