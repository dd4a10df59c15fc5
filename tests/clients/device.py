#!/usr/bin/env python3
"""A device written with Eclipse Paho (paho-mqtt), for Vigil's end-to-end tests.

Connects as one device, optionally subscribes to its errors topic, publishes the messages given
as JSON on standard input, waits until every QoS 1 publish is acknowledged, collects what
arrives on the errors topic, and prints one JSON object on standard output:

    {"connected": true, "acked": 3, "reason_codes": [0, 0, 153], "errors": ["..."], "refused": null,
     "granted": [0, 135], "disconnect": {"reason_code": 151, "reason_string": "..."}}

A DISCONNECT from the server (MQTT 5) ends the wait.

Input: a JSON list of {"topic": str, "payload": str | {"hex": str}, "qos": 0|1,
"content_type": str?, "retain": bool?}.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--version", choices=["3.1.1", "5"], default="3.1.1")
    ap.add_argument("--subscribe-errors", action="store_true")
    ap.add_argument("--subscribe", action="append", default=[], help="other filters to try")
    ap.add_argument("--wait-errors", type=int, default=0, help="errors to wait for")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    messages = json.load(sys.stdin)

    v5 = args.version == "5"
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{args.device}-paho",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    client.username_pw_set(args.device, args.secret)

    connected = threading.Event()
    subscribed = threading.Event()
    out = {"connected": False, "acked": 0, "reason_codes": [], "errors": [], "refused": None}
    lock = threading.Lock()

    def on_connect(c, _u, _flags, reason_code, _props):
        if reason_code.is_failure:
            out["refused"] = str(reason_code)
        else:
            out["connected"] = True
        connected.set()

    def on_subscribe(_c, _u, _mid, reason_codes, _props):
        out["granted"] = [int(rc.value) for rc in reason_codes]
        subscribed.set()

    def on_publish(_c, _u, _mid, reason_code, _props):
        with lock:
            out["acked"] += 1
            out["reason_codes"].append(int(reason_code.value))

    def on_disconnect(_c, _u, _flags, reason_code, props):
        # The first DISCONNECT the server sent (MQTT 5), with its reason string if any.
        with lock:
            if out.get("disconnect") is None and int(reason_code.value) != 0:
                out["disconnect"] = {
                    "reason_code": int(reason_code.value),
                    "reason_string": getattr(props, "ReasonString", None) if props else None,
                }

    def on_message(_c, _u, msg):
        with lock:
            out["errors"].append(json.loads(msg.payload))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + args.timeout
    if not connected.wait(args.timeout) or not out["connected"]:
        client.loop_stop()
        print(json.dumps(out))
        return 0

    filters = list(args.subscribe)
    if args.subscribe_errors:
        filters.append(f"vigil/v1/devices/{args.device}/errors")
    if filters:
        client.subscribe([(f, 1) for f in filters])
        subscribed.wait(max(0.0, deadline - time.monotonic()))

    infos = []
    for m in messages:
        payload = m["payload"]
        if isinstance(payload, dict):
            payload = bytes.fromhex(payload["hex"])
        props = None
        if v5 and m.get("content_type"):
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = m["content_type"]
        infos.append(
            client.publish(
                m["topic"],
                payload,
                qos=m.get("qos", 1),
                retain=m.get("retain", False),
                properties=props,
            )
        )

    want_acks = sum(1 for m in messages if m.get("qos", 1) > 0)
    while time.monotonic() < deadline:
        with lock:
            done = (out["acked"] >= want_acks and len(out["errors"]) >= args.wait_errors) or (
                out.get("disconnect") is not None
            )
        if done:
            break
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
