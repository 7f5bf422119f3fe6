"""aiocoap, a CoAP stack that shares no code with the gateway, posts a tracker's report as a
confirmable request, reads the discovery document and a source's schema, and gets 4.00 with
a diagnostic for a payload that does not fit; a write made conditional (If-Match) on the
ETag of the schema it read is taken, one with another ETag is 4.12, and one with a critical
option the gateway does not understand is 4.02."""

import asyncio
import json
import signal

import aiocoap

from aiocoap.optiontypes import OpaqueOption

from test_serve_pull import get, start_with_gps


def test_aiocoap_post_discover_and_errors(gateway_bin, tmp_path, schemas):
    process, base, addresses = start_with_gps(gateway_bin, tmp_path, schemas)
    try:
        host, port = addresses["coap"]["udp"][0].rsplit(":", 1)
        root = f"coap://{host}:{port}"

        async def talk():
            context = await aiocoap.Context.create_client_context()
            try:
                report = json.dumps({"i": "C-77", "n": 1, "ts": 1767268800, "la": 49.28, "lo": -123.12}).encode()
                ok = await context.request(aiocoap.Message(
                    code=aiocoap.POST, uri=f"{root}/datasets/gps/sources/vendorC", payload=report,
                    content_format=50)).response
                bad = await context.request(aiocoap.Message(
                    code=aiocoap.POST, uri=f"{root}/datasets/gps/sources/vendorC", payload=b'{"i": 5}',
                    content_format=50)).response
                links = await context.request(aiocoap.Message(code=aiocoap.GET, uri=f"{root}/.well-known/core")).response
                source = f"{root}/datasets/gps/sources/vendorC"
                schema = await context.request(aiocoap.Message(code=aiocoap.GET, uri=source)).response

                def conditional(device, **options):
                    report = json.dumps({"i": device, "n": 1, "ts": 1767268800, "la": 49.28, "lo": -123.12}).encode()
                    message = aiocoap.Message(code=aiocoap.POST, uri=source, payload=report, content_format=50)
                    for name, value in options.items():
                        if name == "critical":
                            message.opt.add_option(OpaqueOption(value, b"\x01"))
                        else:
                            setattr(message.opt, name, value)
                    return context.request(message).response

                conditions = [
                    await conditional("C-78", if_match=[schema.opt.etag]),
                    await conditional("X-1", if_match=[b"\x01"]),
                    await conditional("X-2", critical=2053),
                ]
                return ok, bad, links, schema, conditions
            finally:
                await context.shutdown()

        ok, bad, links, schema, (matching, stale, critical) = asyncio.run(talk())
        assert ok.code == aiocoap.CHANGED, ok
        assert bad.code == aiocoap.BAD_REQUEST, bad
        assert b"field" in bad.payload, bad.payload
        assert b"</datasets/gps/sources/vendorC>" in links.payload, links.payload
        assert schema.code == aiocoap.CONTENT and json.loads(schema.payload)["source"] == "vendorC", schema
        assert schema.opt.etag, schema
        assert matching.code == aiocoap.CHANGED, (matching, matching.payload)
        assert stale.code == aiocoap.PRECONDITION_FAILED, (stale, stale.payload)
        assert critical.code == aiocoap.BAD_OPTION and b"2053" in critical.payload, (critical, critical.payload)

        rows = []
        for _ in range(100):
            rows = [json.loads(line) for line in get(f"{base}/datasets/gps/tail?limit=10").decode().splitlines() if line]
            if len(rows) >= 2:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert sorted(r["device_id"] for r in rows) == ["C-77", "C-78"], rows
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()
