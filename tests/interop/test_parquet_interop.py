"""Committed data slices read by a Parquet reader we did not write (pyarrow): the physical
layout the ODF spec asks for, the values we pushed, and file names that are the files' hashes."""

import hashlib
import json

import pyarrow.parquet as pq

MANIFEST = """
kind: DatasetSnapshot
version: 1
content:
  name: gps
  kind: Root
  metadata:
    - kind: AddPushSource
      sourceName: default
      read:
        kind: NdJson
        schema:
          fields:
            - { name: device_id, type: string }
            - { name: t, type: timestamp }
            - { name: lat, type: float64 }
            - { name: battery, type: { kind: Option, inner: uint8 } }
      merge:
        kind: Ledger
        primaryKey: [device_id, t]
    - kind: SetVocab
      eventTimeColumn: t
"""

RECORDS = [
    {"device_id": "A-1", "t": "2026-01-01T12:00:00Z", "lat": 49.28, "battery": 87},
    {"device_id": "A-2", "t": "2026-01-01T12:00:05.250Z", "lat": 49.3, "battery": None},
]


def slices(data_dir):
    return sorted(p for p in (data_dir / "gps" / "data").iterdir() if not p.name.startswith("."))


def test_pyarrow_reads_the_slice_as_the_spec_lays_it_out(gateway):
    gateway("add", "--stdin", stdin=MANIFEST.encode())
    gateway("ingest", "gps", "--stdin", stdin="\n".join(json.dumps(r) for r in RECORDS).encode())
    [path] = slices(gateway.data_dir)

    # The file is named by the SHA3-256 multihash of its bytes.
    assert path.name == "f1620" + hashlib.sha3_256(path.read_bytes()).hexdigest()

    parquet = pq.ParquetFile(path)
    physical = {c.name: c for c in parquet.schema}
    assert [c.name for c in parquet.schema] == ["offset", "op", "system_time", "t", "device_id", "lat", "battery"]
    assert physical["offset"].physical_type == "INT64"
    assert physical["op"].physical_type == "INT32"
    for column in ("system_time", "t"):
        assert physical[column].physical_type == "INT64"
        logical = physical[column].logical_type
        assert logical.type == "TIMESTAMP"
        logical = json.loads(logical.to_json())
        assert (logical["isAdjustedToUTC"], logical["timeUnit"]) == (True, "milliseconds"), logical
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert parquet.metadata.row_group(0).column(0).statistics.has_min_max

    table = parquet.read()
    assert table.column("offset").to_pylist() == [0, 1]
    assert table.column("op").to_pylist() == [0, 0]
    assert table.column("device_id").to_pylist() == ["A-1", "A-2"]
    assert table.column("lat").to_pylist() == [49.28, 49.3]
    assert table.column("battery").to_pylist() == [87, None]
    assert [t.isoformat() for t in table.column("t").to_pylist()] == [
        "2026-01-01T12:00:00+00:00",
        "2026-01-01T12:00:05.250000+00:00",
    ]
    assert str(table.schema.field("t").type) == "timestamp[ms, tz=UTC]"
    assert not table.schema.field("offset").nullable and table.schema.field("lat").nullable
