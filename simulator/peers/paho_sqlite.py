"""A clinic's own MQTT-to-SQLite bridge: the "typical alternative" in `vigil-sim bench`.

What a competent Python developer would write instead of adopting Vigil, in its strongest
reasonable form, so that the benchmark compares Vigil with a fair opponent rather than a straw man:

- paho-mqtt 2.x, MQTT 3.1.1, QoS 1, a fixed client id with a persistent session
  (clean_session=False), so that readings published while the bridge is down wait at the broker;
- paho's own network thread (loop_start) receives and acknowledges; on_message only enqueues, so a
  slow commit never stalls the socket;
- one writer (this process's main thread) parses the JSON payloads and commits them in batches:
  every --batch messages or --interval seconds, whichever comes first, one executemany inside one
  transaction;
- SQLite in WAL mode with synchronous=FULL. The comparison is with Vigil's durable storage, so a
  committed batch must survive a power cut too: in WAL mode, synchronous=NORMAL (the popular
  setting) may lose the last commits on power loss, FULL syncs the WAL on every commit;
- one table, one row per reading (a JSON array or SenML pack becomes several rows), and the index a
  dashboard needs to read a device's metric over time.

What it does NOT do, compared with Vigil:

- no acknowledgement after commit: paho acknowledges a QoS 1 message as soon as on_message returns,
  before its row is durable; a crash loses what was acknowledged but not yet committed (up to one
  batch). paho 2 offers manual_ack=True, but few bridges use it;
- no validation: no device registry, no units, no plausibility ranges, no check that the metric
  exists; whatever parses as JSON is stored, and what does not parse is stored raw;
- no dead letters, no error topic back to the device, no duplicate suppression (a QoS 1
  redelivery is stored twice);
- no Bluetooth GATT decoding (it subscribes to the JSON readings topic only), no alerts, no
  patient record.

Protocol with the caller (vigil-sim, simulator/src/peers.rs), on stdout, one line each, flushed:
`ready` once the subscription is acknowledged; `stored <messages> <rows>` after every commit, both
totals since start. SIGTERM (or SIGINT) stops it cleanly: it disconnects, commits what it has
received (it was acknowledged already), prints the final `stored` line and exits 0. The password
is read from the environment (VIGIL_PEER_PASSWORD), not the command line, where `ps` would show it.
"""

import argparse
import datetime
import json
import os
import queue
import signal
import sqlite3
import sys
import threading
import time

import paho.mqtt.client as mqtt

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT NOT NULL,
    topic       TEXT NOT NULL,
    metric      TEXT,
    value,                      -- a number usually; SenML may send a string or a boolean
    unit        TEXT,
    time        REAL,           -- when it was measured, seconds since the Unix epoch
    payload     TEXT,           -- the raw payload, kept only when it could not be parsed
    received_at REAL NOT NULL   -- seconds since the Unix epoch
);
CREATE INDEX IF NOT EXISTS readings_device_metric_time ON readings (device_id, metric, time);
"""

INSERT = (
    "INSERT INTO readings (device_id, topic, metric, value, unit, time, payload, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_print_lock = threading.Lock()


def say(line):
    """Writes one protocol line to stdout; both threads print, so whole lines only."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def open_db(path):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    db.commit()
    return db


def epoch_seconds(t):
    """Device time as seconds since the epoch: a number as is, an RFC 3339 string parsed."""
    if isinstance(t, bool):
        return None
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, str):
        try:
            return datetime.datetime.fromisoformat(t).timestamp()
        except ValueError:
            return None
    return None


def rows_of(topic, payload, received_at):
    """The rows one message becomes: vigil-json objects or arrays, or a SenML pack."""
    parts = topic.split("/")
    device_id = parts[3] if len(parts) > 3 else ""
    # What cannot be read as readings is kept raw, so nothing acknowledged vanishes silently.
    raw = [(device_id, topic, None, None, None, None, payload.decode("utf-8", "replace"),
            received_at)]
    try:
        doc = json.loads(payload)
    except ValueError:  # not JSON, or not UTF-8
        return raw
    records = doc if isinstance(doc, list) else [doc]
    rows = []
    base_time, base_unit = 0.0, None
    for r in records:
        if not isinstance(r, dict):
            continue
        if "metric" in r:  # vigil-json
            rows.append((device_id, topic, r.get("metric"), r.get("value"), r.get("unit"),
                         epoch_seconds(r.get("time")), None, received_at))
            continue
        # SenML (RFC 8428): base fields carry over to the records after them.
        base_time = epoch_seconds(r.get("bt")) if "bt" in r else base_time
        base_unit = r.get("bu", base_unit)
        for key in ("v", "vs", "vb", "vd"):
            if key in r:
                value = r[key]
                break
        else:
            continue  # a record with base fields only
        t = epoch_seconds(r.get("t", 0.0))
        when = None if base_time is None or t is None else base_time + t
        rows.append((device_id, topic, r.get("n") or r.get("bn"), value, r.get("u", base_unit),
                     when, None, received_at))
    return rows or raw


def main():
    ap = argparse.ArgumentParser(prog="paho_sqlite", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--user", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--topic", default="vigil/v1/devices/+/readings")
    ap.add_argument("--batch", type=int, default=1000, help="commit every N messages ...")
    ap.add_argument("--interval", type=float, default=0.1, help="... or every N seconds")
    args = ap.parse_args()

    db = open_db(args.db)
    inbox = queue.SimpleQueue()
    stop = threading.Event()
    failure = []
    ready = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            failure.append(f"connect refused: {reason_code}")
            stop.set()
            return
        # Subscribing again on every connection is harmless with a persistent session and
        # necessary if the broker lost it.
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            failure.append(f"subscription refused: {reason_codes}")
            stop.set()
        elif not ready.is_set():
            ready.set()
            say("ready")

    def on_message(client, userdata, msg):
        inbox.put((msg.topic, msg.payload, time.time()))

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not stop.is_set():
            print(f"disconnected ({reason_code}); paho reconnects", file=sys.stderr, flush=True)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(args.user, os.environ.get("VIGIL_PEER_PASSWORD"))
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    stored_messages = 0
    stored_rows = 0

    def commit(batch):
        nonlocal stored_messages, stored_rows
        rows = []
        for topic, payload, received_at in batch:
            rows.extend(rows_of(topic, payload, received_at))
        with db:  # one transaction: BEGIN ... COMMIT, or ROLLBACK on error
            db.executemany(INSERT, rows)
        stored_messages += len(batch)
        stored_rows += len(rows)
        say(f"stored {stored_messages} {stored_rows}")

    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()

    batch = []
    deadline = 0.0
    while not stop.is_set():
        wait = args.interval if not batch else max(deadline - time.monotonic(), 0.0)
        try:
            item = inbox.get(timeout=wait)
        except queue.Empty:
            item = None
        if item is not None:
            if not batch:
                deadline = time.monotonic() + args.interval
            batch.append(item)
            while len(batch) < args.batch:  # take what is already waiting, without blocking
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
        if batch and (len(batch) >= args.batch or time.monotonic() >= deadline):
            commit(batch)
            batch = []

    # Stop receiving first, then store everything already acknowledged to the broker.
    client.disconnect()
    client.loop_stop()
    while True:
        try:
            batch.append(inbox.get_nowait())
        except queue.Empty:
            break
    if batch:
        commit(batch)
    say(f"stored {stored_messages} {stored_rows}")
    db.close()
    if failure:
        print(f"paho_sqlite: {failure[0]}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
