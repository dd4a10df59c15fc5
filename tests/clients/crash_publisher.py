#!/usr/bin/env python3
"""Publishes COUNT QoS 1 readings through Paho while Vigil may be killed and restarted.

Paho keeps every unacknowledged QoS 1 message and sends it again after reconnecting, which is
exactly what a real device does; Vigil must store each reading once. Prints "acked N" lines as
acknowledgements arrive and "done N" when all are acknowledged; exits 1 on timeout.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--start", type=int, required=True, help="Unix seconds of the first reading")
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--base", type=int, default=60, help="lowest heart rate sent")
    ap.add_argument("--spread", type=int, default=40, help="values cycle base..base+spread-1")
    ap.add_argument(
        "--rate", type=float, default=0.0, help="readings handed to Paho per second (0: all at once)"
    )
    args = ap.parse_args()

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{args.device}-crash",
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    client.username_pw_set(args.device, args.secret)
    client.max_inflight_messages_set(64)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
    acked = 0
    lock = threading.Lock()

    def on_publish(_c, _u, _mid, _rc, _p):
        nonlocal acked
        with lock:
            acked += 1

    client.on_publish = on_publish
    client.connect_async("127.0.0.1", args.port, keepalive=5)
    client.loop_start()

    last = -1

    def report() -> int:
        nonlocal last
        with lock:
            n = acked
        if n != last:
            print(f"acked {n}", flush=True)
            last = n
        return n

    topic = f"vigil/v1/devices/{args.device}/readings"
    began = time.monotonic()
    for i in range(args.count):
        # Distinct times, one second apart, so every reading is a distinct observation.
        body = {"metric": "heart_rate", "value": args.base + i % args.spread, "time": args.start + i}
        client.publish(topic, json.dumps(body), qos=1)
        if i % 20 == 19:
            # Paced: the stream lasts count / rate seconds. Either way acknowledgements are
            # reported meanwhile, not only once every publish is handed to Paho.
            if args.rate > 0:
                ahead = began + (i + 1) / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            report()

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        n = report()
        if n >= args.count:
            print(f"done {n}", flush=True)
            client.disconnect()
            client.loop_stop()
            return 0
        time.sleep(0.05)
    print(f"timeout acked {acked}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
