"""paho-mqtt, a client that shares no code with the gateway, publishes to the embedded broker
over MQTT 5: a good payload is acknowledged with reason code 0 and committed; a payload of
which no record fits gets 0x99 (Payload format invalid) and goes to the quarantine."""

import json
import signal
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from test_serve_pull import get, start_with_gps


def test_paho_v5_publish_outcomes(gateway_bin, tmp_path, schemas):
    process, base, addresses = start_with_gps(gateway_bin, tmp_path, schemas)
    try:
        host, port = addresses["mqtt"]["tcp"][0].rsplit(":", 1)
        acks = {}
        done = threading.Event()

        def on_publish(client, userdata, mid, reason_code, properties):
            acks[mid] = reason_code.value
            if len(acks) == 2:
                done.set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-test", protocol=mqtt.MQTTv5)
        client.on_publish = on_publish
        client.connect(host, int(port))
        client.loop_start()
        good = json.dumps({"device_id": "P-1", "seq": 1, "t": "2026-01-01T00:00:00Z", "lat": 49.2, "lon": -123.1})
        ndjson = Properties(PacketTypes.PUBLISH)
        ndjson.ContentType = "application/x-ndjson"
        first = client.publish("datasets/gps/sources/vendorA", good, qos=1, properties=ndjson)
        second = client.publish("datasets/gps/sources/vendorA", "{not json", qos=1)
        assert done.wait(30), acks
        client.loop_stop()
        client.disconnect()
        assert acks[first.mid] == 0, acks
        assert acks[second.mid] == 0x99, acks

        rows = []
        for _ in range(100):
            rows = [json.loads(line) for line in get(f"{base}/datasets/gps/tail?limit=10").decode().splitlines() if line]
            if rows:
                break
            threading.Event().wait(0.1)
        assert [r["device_id"] for r in rows] == ["P-1"], rows
        quarantine = json.loads(get(f"{base}/datasets/gps/quarantine"))
        assert len(quarantine["entries"]) == 1, quarantine

        # The same over MQTT over WebSocket.
        ws_host, ws_port = addresses["mqtt"]["ws"][0].rsplit(":", 1)
        acked = threading.Event()
        ws = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", protocol=mqtt.MQTTv311, transport="websockets")
        ws.ws_set_options(path="/mqtt", headers={"Sec-WebSocket-Protocol": "mqtt"})
        ws.on_publish = lambda client, userdata, mid, reason_code, properties: acked.set()
        ws.connect(ws_host, int(ws_port))
        ws.loop_start()
        over_ws = json.dumps({"device_id": "P-2", "seq": 1, "t": "2026-01-01T00:00:00Z", "lat": 49.2, "lon": -123.1})
        ws.publish("datasets/gps/sources/vendorA", over_ws, qos=1)
        assert acked.wait(30)
        ws.loop_stop()
        ws.disconnect()
        for _ in range(100):
            rows = [json.loads(line) for line in get(f"{base}/datasets/gps/tail?limit=10").decode().splitlines() if line]
            if len(rows) == 2:
                break
            threading.Event().wait(0.1)
        assert sorted(r["device_id"] for r in rows) == ["P-1", "P-2"], rows
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()


def test_paho_v5_wills_and_topic_aliases_keep_to_the_rules(gateway_bin, tmp_path, schemas):
    """A will on a topic the client may not publish to is refused at CONNECT (0x87); a topic
    alias above the CONNACK's Topic Alias Maximum closes the connection unacknowledged."""
    process, base, addresses = start_with_gps(gateway_bin, tmp_path, schemas)
    try:
        host, port = addresses["mqtt"]["tcp"][0].rsplit(":", 1)

        connacks = []
        connected = threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):
            connacks.append((reason_code.value, properties))
            connected.set()

        forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-forger", protocol=mqtt.MQTTv5)
        forger.on_connect = on_connect
        forger.will_set("replies/vendorB/cmd", "forged", qos=1)
        forger.connect(host, int(port))
        forger.loop_start()
        assert connected.wait(30)
        forger.loop_stop()
        assert connacks[0][0] == 0x87, connacks

        connacks.clear()
        connected.clear()
        acks, closed = {}, threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-alias", protocol=mqtt.MQTTv5)
        client.on_connect = on_connect
        client.on_publish = lambda c, u, mid, reason_code, properties: acks.__setitem__(mid, reason_code.value)
        client.on_disconnect = lambda c, u, flags, reason_code, properties: closed.set()
        client.connect(host, int(port))
        client.loop_start()
        assert connected.wait(30)
        assert connacks[0][0] == 0 and connacks[0][1].TopicAliasMaximum == 16, connacks
        report = json.dumps({"device_id": "P-9", "seq": 1, "t": "2026-01-01T00:00:00Z", "lat": 49.2, "lon": -123.1})
        alias = Properties(PacketTypes.PUBLISH)
        alias.TopicAlias = 17
        sent = client.publish("datasets/gps/sources/vendorA", report, qos=1, properties=alias)
        assert closed.wait(30), "the connection stayed open"
        client.loop_stop()
        assert sent.mid not in acks, acks
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "gateway.log").read_text()
