#!/usr/bin/env python3
"""An independent Kafka consumer of tenantd's lifecycle events, for the e2e tests.

It compiles the protos of proto/tenant/v1 with grpc_tools' protoc into a temporary
directory, reads the topic from the earliest offset in a consumer group of its own, and
prints one JSON line per message on stdout:

    {"partition": 0, "offset": 3, "key": "<tenant id>", "headers": {"ce_id": "..."},
     "event": {...TenantEvent as JSON, proto field names...}, "payload_case": "tenant_created"}

A message whose value does not decode as a TenantEvent gives a line with "error" and
"value_hex" instead of "event". It stops once it has seen --expect distinct event ids (the
ce_id header, else the decoded event_id) and exits 0, or at the --timeout deadline, counted
from its start, with exit code 2 and a message on stderr (after printing what it saw).
Exit code 1: bad arguments or protos that do not compile.

Requires: tests/python/requirements.txt (scripts/test-services.sh installs it).
"""

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

START = time.monotonic()


def parse_args():
    default_proto_dir = os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
    )
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", required=True, help="bootstrap servers, e.g. 127.0.0.1:19092")
    p.add_argument("--topic", required=True, help="the topic to read, e.g. tenant.events.v1")
    p.add_argument("--expect", required=True, type=int,
                   help="stop once this many distinct event ids (ce_id) have been seen")
    p.add_argument("--timeout", required=True, type=float,
                   help="hard deadline in seconds from start; exit 2 if --expect is not reached")
    p.add_argument("--proto-dir", default=default_proto_dir,
                   help="the proto root holding tenant/v1/*.proto (default: %(default)s)")
    args = p.parse_args()
    if args.expect < 1:
        p.error("--expect must be at least 1")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    return args


def eprint(*parts):
    print("consume_events:", *parts, file=sys.stderr, flush=True)


def compile_protos(proto_dir):
    """Compiles tenant/v1/*.proto into a temp dir on sys.path; returns (event_pb2, tmp dir)."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(glob.glob(os.path.join(proto_dir, "tenant", "v1", "*.proto")))
    if not sources:
        raise RuntimeError(f"no .proto files in {os.path.join(proto_dir, 'tenant', 'v1')}")
    rel = [os.path.relpath(s, proto_dir) for s in sources]
    out = tempfile.mkdtemp(prefix="consume-events-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        *rel,
    ])
    if code != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError(f"protoc failed (exit {code}) on {', '.join(rel)}")
    for pkg in ("tenant", os.path.join("tenant", "v1")):
        open(os.path.join(out, pkg, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    from tenant.v1 import event_pb2  # noqa: E402  (generated just above)

    return event_pb2, out


def text(b):
    if b is None:
        return None
    if isinstance(b, str):
        return b
    return b.decode("utf-8", errors="replace")


def main():
    args = parse_args()
    deadline = START + args.timeout
    try:
        event_pb2, out_dir = compile_protos(args.proto_dir)
    except Exception as e:  # noqa: BLE001
        eprint(f"cannot compile the protos in {args.proto_dir}: {e}")
        return 1

    from confluent_kafka import Consumer, KafkaError
    from google.protobuf.json_format import MessageToDict

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"consume-events-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # notice a topic created after subscribing within a second, not the default 5 minutes
        "topic.metadata.refresh.interval.ms": 1000,
    })
    seen = set()
    messages = 0
    try:
        consumer.subscribe([args.topic])
        while len(seen) < args.expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msg = consumer.poll(min(remaining, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                # e.g. UNKNOWN_TOPIC_OR_PART before the service created its topic: keep polling
                if err.code() != KafkaError._PARTITION_EOF:
                    eprint(f"consumer error (continuing): {err}")
                continue
            messages += 1
            headers = {text(k): text(v) for k, v in (msg.headers() or [])}
            line = {
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": text(msg.key()),
                "headers": headers,
            }
            value = msg.value() or b""
            event_id = None
            try:
                ev = event_pb2.TenantEvent()
                ev.ParseFromString(value)
                line["event"] = MessageToDict(ev, preserving_proto_field_name=True)
                line["payload_case"] = ev.WhichOneof("payload")
                event_id = ev.event_id or None
            except Exception as e:  # noqa: BLE001
                line["error"] = f"cannot decode TenantEvent: {e}"
                line["value_hex"] = value.hex()
            print(json.dumps(line, sort_keys=True), flush=True)
            ce_id = headers.get("ce_id") or event_id
            if ce_id:
                seen.add(ce_id)
    finally:
        consumer.close()
        shutil.rmtree(out_dir, ignore_errors=True)

    if len(seen) < args.expect:
        eprint(
            f"timed out after {args.timeout:g}s: saw {len(seen)} distinct event id(s) in "
            f"{messages} message(s) on {args.topic} at {args.brokers}, expected {args.expect}"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
