#!/usr/bin/env python3
"""Verify a rewind JSONL export (or journal) without rewind's code.

Each line is {"seq": n, "prev": hex, "hash": hex, "record": {...}} and
    hash = sha256(bytes.fromhex(prev) + canonical_json(record))
where canonical_json(record) is the UTF-8 of json.dumps(record, sort_keys=True,
separators=(",", ":"), ensure_ascii=False), with no floats anywhere. The line
of seq 1 has prev = sha256("rewind-ledger-v1:" + record["ledger_id"]).

A Checkpoint event must name the seq and hash just before it, and its
ed25519 signature of "rewind-checkpoint-v1:<ledger_id>:<seq>:<head>" must
verify (RFC 8032, checked below in plain Python).

A CSV export (`--format csv`) is checked the same way from its seq, prev,
hash and record columns. Its header must be exactly CSV_COLUMNS below (the
export's own list, `CSV_COLUMNS` in projections/src/audit.rs; a test keeps
the two the same), every row must have exactly that many fields, and each
reading column must say what its record says: recorded_at, run (empty when
the record has none), actor, host, kind (the event's variant) and step
(record["event"][kind]["step"], empty when the event has none). The summary
column is a sentence rewind writes from the event, which cannot be
recomputed without rewind's code: it is for reading, is not checked, and
the "ok:" line of a CSV says so. Trust the record column, not the summary.

Spreadsheet formulas: a reading cell (every column but seq, prev, hash and
record) whose text starts with one of FORMULA_STARTS below (= + - @, a tab,
a carriage return, or ') is exported with one leading ', so that a
spreadsheet shows it as text instead of running it. Before comparing a
reading cell with its record, exactly one leading ' is stripped from it;
a cell not written by that rule (a formula left bare, a ' that was not
needed) is refused, and so is a summary that starts with one of them
unescaped, so that a CSV that verifies opens as text. Spreadsheet programs
cut a cell at 32,767 characters, and a record can be longer: verify the CSV
as it was exported, never one a spreadsheet saved again.

usage: verify_chain.py FILE|- [--head HEX] [--prev HEX] [--key HEX]
  --head HEX  the hash the export must end at (detects a cut-off end)
  --prev HEX  the prev of the first line (links it to a head you already hold)
  --key HEX   the public key checkpoints must be signed with (at least one)
Prints "ok: ..." and exits 0 when the chain holds; else exits 1 naming the
first bad line.
"""

import argparse
import csv
import hashlib
import io
import json
import re
import sys


# Ed25519 signature verification (RFC 8032, section 5.1.7), plain integers.
P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e, f = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    g, h = 2 * t1 * t2 * D % P, 2 * z1 * z2 % P
    e, f, g, h = f - e, h - g, h + g, f + e
    return (e * f, g * h, f * g, e * h)


def mul(scalar, point):
    result = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = add(result, point)
        point, scalar = add(point, point), scalar >> 1
    return result


def decompress(data):
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P or (x == 0 and sign):
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


BASE = decompress((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


def ed25519_valid(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a, r = decompress(public), decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % Q
    left, right = mul(s, BASE), add(r, mul(h, a))
    return (left[0] * right[2] - right[0] * left[2]) % P == 0 and \
        (left[1] * right[2] - right[1] * left[2]) % P == 0


def check_checkpoint(seq, prev, record, key):
    """A Checkpoint names the entry before it and is signed; returns its key."""
    checkpoint = record["event"]["Checkpoint"]
    if checkpoint["seq"] != seq - 1 or checkpoint["head"] != prev:
        raise ValueError(f"seq {seq}: the checkpoint does not name the entry before it")
    message = f"rewind-checkpoint-v1:{record['ledger_id']}:{seq - 1}:{prev}".encode()
    public = bytes.fromhex(checkpoint["public_key"])
    if not ed25519_valid(public, message, bytes.fromhex(checkpoint["signature"])):
        raise ValueError(f"seq {seq}: the checkpoint's signature does not verify")
    if key is not None and checkpoint["public_key"] != key:
        raise ValueError(f"seq {seq}: the checkpoint is signed by {checkpoint['public_key']}, not {key}")
    return checkpoint["public_key"]


# The columns of a CSV export, in order: projections/src/audit.rs CSV_COLUMNS.
CSV_COLUMNS = [
    "seq",
    "prev",
    "hash",
    "recorded_at",
    "run",
    "actor",
    "host",
    "kind",
    "step",
    "summary",
    "record",
]

# What a reading cell must not start with unescaped: projections/src/audit.rs
# FORMULA_STARTS. The export writes such a cell with one leading "'".
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def as_exported(text):
    """A reading cell as the export writes it."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def refuse_float(text):
    raise ValueError(f"float {text} is not allowed")


def check_header(header):
    """The first row of a CSV export is exactly CSV_COLUMNS. Raises ValueError."""
    for column, (found, expected) in enumerate(zip(header, CSV_COLUMNS), 1):
        if found != expected:
            raise ValueError(f"column {column} is {found!r}, the export's is {expected!r}")
    if len(header) > len(CSV_COLUMNS):
        raise ValueError(f"column {len(CSV_COLUMNS) + 1} {header[len(CSV_COLUMNS)]!r} is not "
                         f"one of the export's {len(CSV_COLUMNS)} columns")
    if len(header) < len(CSV_COLUMNS):
        raise ValueError(f"column {len(header) + 1} {CSV_COLUMNS[len(header)]!r} is missing")


def csv_entry(fields):
    """The entry of one CSV row, once its reading columns agree with its record."""
    if len(fields) > len(CSV_COLUMNS):
        raise ValueError(f"column {len(CSV_COLUMNS) + 1} holds {fields[len(CSV_COLUMNS)]!r}, "
                         f"past the export's {len(CSV_COLUMNS)} columns")
    if len(fields) < len(CSV_COLUMNS):
        raise ValueError(f"column {len(fields) + 1} ({CSV_COLUMNS[len(fields)]}) is missing")
    row = dict(zip(CSV_COLUMNS, fields))
    if not re.fullmatch("[1-9][0-9]*", row["seq"]):
        raise ValueError(f"seq {row['seq']!r} is not a number")
    record = json.loads(row["record"], parse_float=refuse_float)
    event = record["event"]
    kind = next(iter(event)) if isinstance(event, dict) else event
    payload = event[kind] if isinstance(event, dict) else None
    step = payload.get("step") if isinstance(payload, dict) else None
    for column, value in [("recorded_at", record["recorded_at"]), ("run", record["run"] or ""),
                          ("actor", record["actor"]), ("host", record["host"]), ("kind", kind),
                          ("step", "" if step is None else str(step))]:
        cell = row[column]
        shown = cell[1:] if cell.startswith("'") else cell
        if shown != value:
            raise ValueError(f"seq {row['seq']}: the {column} column says {shown!r}, "
                             f"its record {value!r}")
        if cell != as_exported(value):
            raise ValueError(f"seq {row['seq']}: the {column} column is written {cell!r}, "
                             f"the export writes {as_exported(value)!r}")
    if row["summary"].startswith(FORMULA_STARTS[:-1]):
        raise ValueError(f"seq {row['seq']}: the summary column starts with "
                         f"{row['summary'][0]!r} without the leading ' the export writes, "
                         "so a spreadsheet would run it as a formula")
    return {"seq": int(row["seq"]), "prev": row["prev"], "hash": row["hash"], "record": record}


def check_entry(entry, expected_seq, expected_prev, key=None, checkpoints=None):
    """Checks one entry; returns (seq, hash). Raises ValueError."""
    seq, prev, record = entry["seq"], entry["prev"], entry["record"]
    if type(seq) is not int or seq < 1 or record["seq"] != seq:
        raise ValueError(f"seq {seq!r}: its record says seq {record['seq']!r}")
    if expected_seq is not None and seq != expected_seq:
        raise ValueError(f"seq {seq}: out of order, seq {expected_seq} belongs here")
    if seq == 1:
        genesis = "rewind-ledger-v1:" + record["ledger_id"]
        if prev != hashlib.sha256(genesis.encode()).hexdigest():
            raise ValueError("seq 1: prev is not the genesis hash of its ledger id")
    if expected_prev is not None and prev != expected_prev:
        raise ValueError(f"seq {seq}: prev {prev} does not link to {expected_prev}")
    if not re.fullmatch("[0-9a-f]{64}", prev):
        raise ValueError(f"seq {seq}: prev is not 64 lowercase hex characters")
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(bytes.fromhex(prev) + canonical.encode()).hexdigest()
    if entry["hash"] != digest:
        raise ValueError(f"seq {seq}: altered, the content hashes to {digest}, not {entry['hash']}")
    if isinstance(record["event"], dict) and "Checkpoint" in record["event"]:
        signer = check_checkpoint(seq, prev, record, key)
        if checkpoints is not None:
            checkpoints.append((seq, signer))
    return seq, digest


def main():
    parser = argparse.ArgumentParser(description="Verify a rewind JSONL or CSV export.")
    parser.add_argument("file", help="the export or journal, or - for stdin")
    parser.add_argument("--head", help="the expected hash of the last event")
    parser.add_argument("--prev", help="the expected prev of the first event")
    parser.add_argument("--key", help="the public key every checkpoint must be signed with")
    args = parser.parse_args()
    try:
        with sys.stdin.buffer if args.file == "-" else open(args.file, "rb") as source:
            lines = source.read().split(b"\n")
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if lines[-1] == b"":
        lines.pop()
    # A JSONL line starts with {"seq":, a CSV export with its header, seq first.
    if lines and re.match(rb'"?seq"?,', lines[0]):
        try:
            text = b"\n".join(lines).decode("utf-8")
        except UnicodeDecodeError as error:
            print(f"error: the CSV is not UTF-8: {error}", file=sys.stderr)
            return 1
        # A record of a thousand row images is longer than the csv module's default limit.
        csv.field_size_limit(sys.maxsize)
        # csv.reader, not DictReader: a DictReader keeps the last of two
        # columns of one name, and drops or gathers fields past the header.
        try:
            header, *rows = list(csv.reader(io.StringIO(text, newline="")))
            check_header(header)
        except csv.Error as error:
            print(f"error: the CSV does not parse: {error}", file=sys.stderr)
            return 1
        except ValueError as error:
            print(f"error: the header: {error}", file=sys.stderr)
            return 1
        entries = [lambda row=row: csv_entry(row) for row in rows]
        unit = "row"
    else:
        entries = [lambda line=line: json.loads(line.decode("utf-8"), parse_float=refuse_float)
                   for line in lines]
        unit = "line"
    first = seq = None
    prev = args.prev and args.prev.lower()
    key = args.key and args.key.lower()
    checkpoints = []
    for number, read in enumerate(entries, 1):
        try:
            seq, prev = check_entry(read(), None if seq is None else seq + 1, prev, key,
                                    checkpoints)
        except KeyError as error:
            print(f"error: {unit} {number}: no field {error}", file=sys.stderr)
            return 1
        except (ValueError, TypeError) as error:
            print(f"error: {unit} {number}: {error}", file=sys.stderr)
            return 1
        first = first or seq
    if first is None:
        print("error: the export holds no events", file=sys.stderr)
        return 1
    if args.head is not None and prev != args.head.lower():
        print(f"error: the export ends at seq {seq} with hash {prev}, not at head {args.head}"
              " (events after it are missing, or the head is of another ledger)", file=sys.stderr)
        return 1
    if key is not None and not checkpoints:
        print(f"error: no checkpoint signed by {key} in the export", file=sys.stderr)
        return 1
    if first != 1 and args.prev is None:
        print(f"note: seq {first} is not linked to anything before it (give --prev)",
              file=sys.stderr)
    unchecked = ("; the summary column is for reading and was not checked"
                 if unit == "row" else "")
    print(f"ok: {len(entries)} events, seq {first}..{seq}, head {prev}{unchecked}")
    if checkpoints:
        newest, signer = checkpoints[-1]
        print(f"checkpoints: {len(checkpoints)} signed, the newest at seq {newest} by key {signer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
