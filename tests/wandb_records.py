"""Read a W&B offline run file (``run-*.wandb``) back, for tests.

The file is a LevelDB-style log: a 7-byte header (b":W&B", magic, version), then 32 KiB blocks
of records, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)
holding serialized ``wandb_internal_pb2.Record`` messages.

``run.finish()`` returns before the file is whole: it only tells the wandb service the run is
done (``inform_finish`` is a publish, not a request), and the service writes out its last block
when it closes the stream. So a test reading the file in the same process waits for the run's
``exit`` record, the last one written.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32 * 1024


def records(path: Path, timeout: float = 60.0) -> list:
    """Every record of a finished run's file, once the service has written its ``exit`` record."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(_parse(Path(path).read_bytes(), path))
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        if time.monotonic() > deadline:  # said as what it is, not as a summary that lacks a key
            raise AssertionError(f"{path}: no exit record after {timeout:.0f} s (the wandb service never finished "
                                 f"writing the run; {len(found)} records so far)")
        time.sleep(0.1)


def _parse(data: bytes, path: Path):
    from wandb.proto import wandb_internal_pb2

    if len(data) < 7:  # not even the header written yet
        return
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, parts = 7, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        payload, pos = data[pos : pos + length], pos + length
        if len(payload) < length:  # the service is still writing this record
            return
        if kind == 0:
            continue
        parts = [payload] if kind in (1, 2) else parts + [payload]
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            yield record


def summary(path: Path) -> dict:
    """The run summary as the W&B backend would store it (last value of each key)."""
    out: dict = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                out[key] = json.loads(item.value_json)
    return out
