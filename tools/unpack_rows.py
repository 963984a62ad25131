#!/usr/bin/env python3
"""Print the rows of every RowsPacked event of a rewind JSONL export (or
journal), unpacked, without rewind: one JSON line per event,
{"seq": n, "table": …, "rows": [{"key": […], "before": […] | null,
"after": […] | null}, …]}, each value as the ledger's canonical JSON writes
it ("Null", {"Integer": 5}, {"Real": "0x3ff8000000000000"}, {"Text": …},
{"Blob": "<hex>"}, {"Typed": …}).

Standard library only, except for sealed images (one zstd frame, record
format 3), which need a zstd module: Python 3.14's compression.zstd, or
before it the `zstandard` package (`pip install zstandard`). The packed
format is specified in ledger/src/packed.rs; `tools/verify_chain.py`
proves the images unaltered (they are part of the hashed record), this
reads them.
"""

import argparse
import json
import struct
import sys


class Bad(Exception):
    pass


FRAME_MAGIC = bytes.fromhex("28b52ffd")
PLAIN_MAX = 1 << 30


def unseal(data):
    """The plain images of sealed ones (a zstd frame), or `data` as it is.
    A frame that announces more than PLAIN_MAX bytes, or none, is refused
    before anything is allocated for it, as rewind refuses it."""
    if not data.startswith(FRAME_MAGIC):
        return data
    try:
        from compression import zstd

        def size():
            return zstd.get_frame_info(data).decompressed_size

        decompress, error_type = zstd.decompress, zstd.ZstdError
    except ImportError:
        try:
            import zstandard
        except ImportError:
            raise Bad(
                "the images are sealed (zstd): run this with Python 3.14 or later, "
                "or install the zstandard package (pip install zstandard)"
            )

        def size():
            found = zstandard.frame_content_size(data)
            return None if found < 0 else found

        decompress = zstandard.ZstdDecompressor().decompress
        error_type = zstandard.ZstdError
    try:
        announced = size()
        if announced is None or announced > PLAIN_MAX:
            raise Bad(f"the sealed images announce {announced} bytes, at most {PLAIN_MAX} are read")
        plain = decompress(data)
    except error_type as error:
        raise Bad(f"the sealed images do not unseal: {error}")
    if len(plain) != announced:
        raise Bad(f"the sealed images unseal to {len(plain)} bytes, not {announced}")
    return plain


SAME = object()


def read_value(data, at):
    if at >= len(data):
        raise Bad(f"the images end inside a value at byte {at}")
    tag = data[at]
    at += 1
    if tag == 0:
        return "Null", at
    if tag in (1, 2):
        if at + 8 > len(data):
            raise Bad(f"the images end inside a value at byte {at}")
        raw = data[at:at + 8]
        if tag == 1:
            return {"Integer": struct.unpack("<q", raw)[0]}, at + 8
        return {"Real": "0x%016x" % struct.unpack("<Q", raw)[0]}, at + 8
    if tag in (3, 4, 5):
        if at + 4 > len(data):
            raise Bad(f"the images end inside a value at byte {at}")
        (length,) = struct.unpack("<I", data[at:at + 4])
        start, end = at + 4, at + 4 + length
        if end > len(data):
            raise Bad(f"the images end inside a value at byte {at}")
        raw = data[start:end]
        if tag == 4:
            return {"Blob": raw.hex()}, end
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad(f"text at byte {at - 1} is not UTF-8")
        return {"Text" if tag == 3 else "Typed": text}, end
    if tag == 6:
        return SAME, at
    raise Bad(f"unknown value tag {tag} at byte {at - 1}")


def unpack(event):
    rows = event["rows"]
    width = len(event["columns"])
    names = [column["name"] for column in event["columns"]]
    try:
        keys = [names.index(name) for name in event["key_columns"]]
    except ValueError:
        raise Bad("a key column is not among the columns")
    data = unseal(bytes.fromhex(event["images"]))
    flags = data[:rows]
    if len(flags) != rows or any(flag not in (1, 2, 3) for flag in flags):
        raise Bad("bad row flags")
    at = rows
    befores = []
    for flag in flags:
        image = None
        if flag & 1:
            image = []
            for _ in range(width):
                value, at = read_value(data, at)
                if value is SAME:
                    raise Bad("a before image refers to itself")
                image.append(value)
        befores.append(image)
    out = []
    for flag, before in zip(flags, befores):
        after = None
        if flag & 2:
            after = []
            for position in range(width):
                value, at = read_value(data, at)
                if value is SAME:
                    if before is None:
                        raise Bad("a value refers to a missing before image")
                    value = before[position]
                after.append(value)
        keyed = after if after is not None else before
        out.append({"key": [keyed[k] for k in keys], "before": before, "after": after})
    if at != len(data):
        raise Bad(f"{len(data) - at} bytes follow the last image")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="the JSONL export or journal, or - for stdin")
    args = parser.parse_args()
    source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        entry = json.loads(line)
        event = entry["record"]["event"]
        if "RowsPacked" not in event:
            continue
        packed = event["RowsPacked"]
        try:
            rows = unpack(packed)
        except Bad as problem:
            print(f"line {number} (seq {entry['seq']}): {problem}", file=sys.stderr)
            return 1
        print(json.dumps({"seq": entry["seq"], "table": packed["table"], "rows": rows},
                         ensure_ascii=False, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
