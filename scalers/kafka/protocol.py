"""The Kafka wire pieces aiokafka 0.14 lacks, and fast codecs for the one large message.

OffsetFetch v8 (KIP-709: several groups in one request) and FindCoordinator v4 (KIP-699: several
groups in one lookup) are declared with aiokafka's own schema types, so aiokafka's connection class
sends them like its own requests. `supports` reads the versions a broker announced (ApiVersions).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from io import BytesIO
from typing import Any

from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

LATEST = -1  # ListOffsets timestamp meaning "the log end offset"
API_OFFSET_FETCH, API_FIND_COORDINATOR = 9, 10
COORDINATOR_GONE = frozenset({14, 15, 16})  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR
GROUP_ID_NOT_FOUND = 69

# -- fast codecs for the one large message --------------------------------------------------------
# A tick's OffsetFetch carries every watched partition of every group (10 000 entries for 100
# groups x 100 partitions); aiokafka's generic schema walk spends ~1 ms per 100 entries on it.
# These hand-written codecs produce the same bytes and the same nested tuples as the schemas
# below (tests/unit/test_kafka_lag.py checks both against aiokafka's), several times faster.

_I16, _I32, _I64 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_PARTITION_FIXED = struct.Struct(">iqi")  # partition_index, committed_offset, leader_epoch


def _put_uvarint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_compact_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
        return
    raw = value.encode()
    _put_uvarint(out, len(raw) + 1)
    out += raw


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def uvarint(self) -> int:
        buf, pos = self.buf, self.pos
        byte = buf[pos]
        pos += 1
        if byte < 0x80:
            self.pos = pos
            return byte
        value, shift = byte & 0x7F, 7
        while True:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift > 28:
                raise ValueError("unsigned varint is too long")

    def compact_string(self) -> str | None:
        size = self.uvarint() - 1
        if size < 0:
            return None
        start = self.pos
        self.pos = start + size
        if self.pos > len(self.buf):
            raise ValueError("buffer underrun decoding a string")
        return self.buf[start : self.pos].decode()

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return values

    def tags(self) -> dict[int, bytes]:
        count = self.uvarint()
        found: dict[int, bytes] = {}
        for _ in range(count):
            tag, size = self.uvarint(), self.uvarint()
            found[tag] = self.buf[self.pos : self.pos + size]
            self.pos += size
        return found


def encode_offset_fetch_v8(groups: Any, require_stable: bool) -> bytes:
    out = bytearray()
    _put_uvarint(out, len(groups) + 1)
    for group_id, topics, _tags in groups:
        _put_compact_string(out, group_id)
        if topics is None:
            out.append(0)
        else:
            _put_uvarint(out, len(topics) + 1)
            for name, partitions, _topic_tags in topics:
                _put_compact_string(out, name)
                _put_uvarint(out, len(partitions) + 1)
                for partition in partitions:
                    out += _I32.pack(partition)
                out.append(0)  # no tagged fields
        out.append(0)
    out.append(1 if require_stable else 0)
    out.append(0)
    return bytes(out)


def decode_offset_fetch_v8(data: BytesIO | bytes) -> tuple[Any, ...]:
    buf = data if isinstance(data, bytes) else data.read()
    r = _Reader(buf)
    (throttle,) = r.unpack(_I32)
    groups: list[Any] = []
    for _ in range(r.uvarint() - 1):
        group_id = r.compact_string()
        topic_count = r.uvarint() - 1
        topics: list[Any] | None = None if topic_count < 0 else []
        for _ in range(max(topic_count, 0)):
            name = r.compact_string()
            partitions: list[Any] = []
            for _ in range(r.uvarint() - 1):
                index, offset, epoch = r.unpack(_PARTITION_FIXED)
                metadata = r.compact_string()
                (code,) = r.unpack(_I16)
                partitions.append((index, offset, epoch, metadata, code, r.tags()))
            assert topics is not None
            topics.append((name, partitions, r.tags()))
        (code,) = r.unpack(_I16)
        groups.append((group_id, topics, code, r.tags()))
    return throttle, groups, r.tags()


class OffsetFetchGroupsResponseV8(Response):  # type: ignore[misc]
    API_KEY = API_OFFSET_FETCH
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("committed_offset", Int64),
                                ("committed_leader_epoch", Int32),
                                ("metadata", CompactString("utf-8")),
                                ("error_code", Int16),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("error_code", Int16),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> OffsetFetchGroupsResponseV8:
        return cls(*decode_offset_fetch_v8(data))


class OffsetFetchGroupsRequestV8(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = API_OFFSET_FETCH
    API_VERSION = 8
    RESPONSE_TYPE = OffsetFetchGroupsResponseV8
    SCHEMA = Schema(
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        ("partition_indexes", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )

    def encode(self) -> bytes:
        return encode_offset_fetch_v8(self.groups, bool(self.require_stable))


class OffsetFetchGroups(Request[OffsetFetchGroupsRequestV8]):  # type: ignore[misc]
    """OffsetFetch for several groups in one request; ``None`` topics = all the group's commits."""

    API_KEY = API_OFFSET_FETCH

    def __init__(self, groups: Mapping[str, list[tuple[str, list[int]]] | None]) -> None:
        self._groups = dict(groups)

    def build(self, request_struct_class: type[Any]) -> Any:
        groups: list[tuple[str, list[tuple[str, list[int], dict[int, bytes]]] | None, Any]] = [
            (group, None if spec is None else [(t, parts, {}) for t, parts in spec], {})
            for group, spec in self._groups.items()
        ]
        return request_struct_class(groups, False, {})


class FindCoordinatorsResponseV4(Response):  # type: ignore[misc]
    API_KEY = API_FIND_COORDINATOR
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "coordinators",
            CompactArray(
                ("key", CompactString("utf-8")),
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class FindCoordinatorsRequestV4(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = API_FIND_COORDINATOR
    API_VERSION = 4
    RESPONSE_TYPE = FindCoordinatorsResponseV4
    SCHEMA = Schema(
        ("key_type", Int8),
        ("coordinator_keys", CompactArray(CompactString("utf-8"))),
        ("tags", TaggedFields),
    )


class FindCoordinators(Request[FindCoordinatorsRequestV4]):  # type: ignore[misc]
    """FindCoordinator for several consumer groups in one request (KIP-699)."""

    API_KEY = API_FIND_COORDINATOR

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(0, self._groups, {})


def supports(conn: AIOKafkaConnection, api_key: int, version: int) -> bool:
    """Whether the broker behind `conn` serves `version` of `api_key` (from ApiVersions)."""
    versions: Mapping[int, tuple[int, int]] = getattr(conn, "_versions", {})
    low, high = versions.get(api_key, (0, -1))
    return bool(low <= version <= high)
