"""Recovery of `.incomplete` episode bags (left by a crash or a write error), and the MCAP scanner
it uses: a linear scan of a possibly truncated MCAP file (one without a summary), streaming one
top-level record (a chunk, about 1 MiB) at a time.

`recover_incomplete(dir)` turns what was flushed into a readable `.partial` bag (layout and
durability rules: see bag_writer.py); `recover_all_incomplete(output_dir)` does so for every
`.incomplete` bag of a recorder's output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2.metadata import parse_qos

from world4rl_bringup.bag_writer import (
    CUSTOM_PREFIX,
    INCOMPLETE_SUFFIX,
    PARTIAL_SUFFIX,
    RECOVERING_SUFFIX,
    ROSBAG_VERSION,
    SIDECAR_NAME,
    STATUS_RECOVERED,
    BagWriteError,
    EpisodeMeta,
    _EpisodeWriter,
    _publish_dir,
    ensure_msgtype,
    episode_typestore,
    parse_episode_index,
)
from world4rl_model.atomic_io import fsync_path

MCAP_MAGIC = b"\x89MCAP0\r\n"


@dataclass
class McapScan:
    """What a linear scan of a possibly truncated MCAP file found."""

    schemas: dict[int, tuple[str, str]]  # id -> (name, msgdef text)
    channels: dict[int, tuple[str, int, bytes]]  # id -> (topic, schema id, metadata bytes)
    messages: list[tuple[int, int, bytes]]  # (channel id, log time, data); empty with keep_messages=False
    complete_chunks: int
    truncated: bool  # the file ended inside a record
    message_counts: dict[int, int] = field(default_factory=dict)  # channel id -> messages found


def _read_string(buf: memoryview, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buf, pos)
    return bytes(buf[pos + 4 : pos + 4 + length]).decode(), pos + 4 + length


def _record_events(opcode: int, body: memoryview, scan: McapScan, *, top_level: bool) -> Iterator[tuple]:
    """Parse one complete MCAP record: schemas and channels go into `scan`; yields ("channel",
    id) and ("message", channel id, log time, data view) events, in file order."""
    if opcode == 0x03:  # Schema
        (sid,) = struct.unpack_from("<H", body, 0)
        name, p = _read_string(body, 2)
        _, p = _read_string(body, p)  # encoding
        data, _ = _read_string(body, p)
        scan.schemas[sid] = (name, data)
    elif opcode == 0x04:  # Channel
        cid, sid = struct.unpack_from("<HH", body, 0)
        topic, p = _read_string(body, 4)
        _, p = _read_string(body, p)  # message encoding
        (meta_len,) = struct.unpack_from("<I", body, p)
        scan.channels[cid] = (topic, sid, bytes(body[p + 4 : p + 4 + meta_len]))
        yield ("channel", cid)
    elif opcode == 0x05:  # Message
        cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
        scan.message_counts[cid] = scan.message_counts.get(cid, 0) + 1
        yield ("message", cid, log_time, body[22:])
    elif opcode == 0x06 and top_level:  # Chunk (uncompressed: rosbags writes no compression here)
        p = 8 + 8 + 8 + 4
        compression, p = _read_string(body, p)
        (records_len,) = struct.unpack_from("<Q", body, p)
        if compression:
            raise BagWriteError(f"compressed chunks ({compression}) are not supported by recovery")
        records = body[p + 8 : p + 8 + records_len]
        pos = 0
        while pos + 9 <= len(records):  # a record cut short inside a complete chunk ends the chunk
            inner_opcode = records[pos]
            (length,) = struct.unpack_from("<Q", records, pos + 1)
            end = pos + 9 + length
            if end > len(records):
                break
            yield from _record_events(inner_opcode, records[pos + 9 : end], scan, top_level=False)
            pos = end
        scan.complete_chunks += 1


def iter_mcap(path: str | os.PathLike, scan: McapScan) -> Iterator[tuple]:
    """Stream the complete records of a possibly truncated MCAP file, reading one top-level record
    (a chunk: about 1 MiB as rosbags writes them) at a time and skipping indexes with a seek, so
    memory stays bounded by the largest chunk whatever the file's size. Fills `scan` (schemas,
    channels, counts, truncation) as it goes and yields the events of _record_events. Stops at the
    summary (DataEnd/Footer) or at the first incomplete record (scan.truncated)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise BagWriteError(f"{path}: not an MCAP file (bad magic)")
        pos = len(MCAP_MAGIC)
        while True:
            header = f.read(9)
            if len(header) < 9:
                scan.truncated = scan.truncated or bool(header)
                return
            opcode = header[0]
            (length,) = struct.unpack_from("<Q", header, 1)
            end = pos + 9 + length
            if end > size:
                scan.truncated = True
                return
            if opcode in (0x0F, 0x02):  # DataEnd / Footer: the rest is the summary
                return
            if opcode in (0x03, 0x04, 0x05, 0x06):
                body = f.read(length)
                if len(body) < length:
                    scan.truncated = True
                    return
                yield from _record_events(opcode, memoryview(body), scan, top_level=True)
            else:  # header, message indexes, metadata, ...: not needed
                f.seek(end)
            pos = end


def scan_mcap(path: str | os.PathLike, *, keep_messages: bool = True) -> McapScan:
    """Every message in the complete records of an MCAP file, tolerating a truncated tail. With
    keep_messages=False only the counts are kept (memory independent of the file's size)."""
    scan = McapScan({}, {}, [], 0, False)
    for event in iter_mcap(path, scan):
        if keep_messages and event[0] == "message":
            scan.messages.append((event[1], event[2], bytes(event[3])))
    return scan


def _qos_from_channel_metadata(metadata: bytes) -> str:
    buf = memoryview(metadata)
    pos = 0
    while pos < len(buf):
        key, pos = _read_string(buf, pos)
        value, pos = _read_string(buf, pos)
        if key == "offered_qos_profiles":
            return value
    return ""


def recover_incomplete(bag_dir: str | os.PathLike) -> Path:
    """Rebuild a readable `.partial` bag from an `.incomplete` one (every message in its flushed,
    complete chunks), then delete the `.incomplete` directory. Streams: each message is copied as
    it is read, one chunk in memory at a time, whatever the bag's size. Needs free space for a
    copy; on failure the `.incomplete` directory is left untouched. The source is deleted only
    once the `.partial` bag (its files, directory and name) is on disk (fsync)."""
    bag_dir = Path(bag_dir)
    if not bag_dir.name.endswith(INCOMPLETE_SUFFIX):
        raise BagWriteError(f"{bag_dir}: not an {INCOMPLETE_SUFFIX} bag directory")
    stem = bag_dir.name[: -len(INCOMPLETE_SUFFIX)]
    target = bag_dir.with_name(stem + PARTIAL_SUFFIX)
    work = bag_dir.with_name(stem + RECOVERING_SUFFIX)
    if (target / "metadata.yaml").is_file():
        # An earlier recovery published the .partial bag and was stopped before deleting its source.
        shutil.rmtree(bag_dir)
        fsync_path(bag_dir.parent)
        return target
    shutil.rmtree(work, ignore_errors=True)
    sidecar_path = bag_dir / SIDECAR_NAME
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {"meta": {}, "connections": []}
    digests = {c["msgtype"]: c["rihs01"] for c in sidecar.get("connections", [])}
    mcaps = sorted(bag_dir.glob("*.mcap"))
    meta_fields = sidecar.get("meta", {})
    meta = (
        EpisodeMeta(**{k: v for k, v in meta_fields.items() if k in EpisodeMeta.__dataclass_fields__})
        if (meta_fields)
        else EpisodeMeta(index=parse_episode_index(stem) or 0, task="")
    )
    scan = McapScan({}, {}, [], 0, False)
    writer = _EpisodeWriter(work, version=ROSBAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        connections = {}
        for event in iter_mcap(mcaps[0], scan) if mcaps else ():
            if event[0] == "message":
                _, cid, stamp, data = event
                if cid not in connections:
                    raise BagWriteError(f"{mcaps[0]}: a message on channel {cid}, which no channel record declares")
                writer.write(connections[cid], stamp, data)
                continue
            cid = event[1]
            if cid in connections:
                continue
            topic, sid, metadata = scan.channels[cid]
            msgtype, msgdef = scan.schemas[sid]
            digest = digests.get(msgtype)
            if digest is None:
                store = episode_typestore()
                ensure_msgtype(store, msgtype)
                digest = store.hash_rihs01(msgtype)
            qos = parse_qos(_qos_from_channel_metadata(metadata))
            connections[cid] = writer.add_connection(
                topic, msgtype, msgdef=msgdef, rihs01=digest, offered_qos_profiles=qos
            )
        custom = meta.custom_data(STATUS_RECOVERED)
        custom[CUSTOM_PREFIX + "recovered_chunks"] = str(scan.complete_chunks)
        custom[CUSTOM_PREFIX + "truncated_tail"] = "true" if scan.truncated else "false"
        for key, value in custom.items():
            writer.set_custom_data(key, value)
        mcap_file = writer.storage.path
        writer.close()
        _publish_dir(work, target, (mcap_file, work / "metadata.yaml"))
    except BaseException:
        writer.abort()
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(bag_dir)
    fsync_path(bag_dir.parent)
    return target


def recover_all_incomplete(output_dir: str | os.PathLike) -> list[tuple[Path, Path | Exception]]:
    """Recover every `.incomplete` bag in output_dir; returns (incomplete dir, partial dir or error)."""
    output_dir = Path(output_dir)
    results: list[tuple[Path, Path | Exception]] = []
    if not output_dir.is_dir():
        return results
    for bag_dir in sorted(output_dir.iterdir()):
        if bag_dir.is_dir() and bag_dir.name.endswith(INCOMPLETE_SUFFIX):
            try:
                results.append((bag_dir, recover_incomplete(bag_dir)))
            except Exception as exc:  # reported per bag; one bad bag never stops the others (or the node)
                results.append((bag_dir, exc))
    return results
