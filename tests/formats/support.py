"""Builders shared by the format tests."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Sequence
from typing import Any

import fastavro
import numpy as np

from connector.batch import OffsetRange
from connector.reader import Headers, RawBatch


def raw_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Headers] | None = None,
    topic: str = "t",
) -> RawBatch:
    """Messages on partition 0 at offsets 100, 101, ..."""
    n = len(values)
    return RawBatch(
        topic=topic,
        values=list(values),
        keys=list(keys) if keys is not None else [None] * n,
        partitions=np.zeros(n, np.int32),
        offsets=np.arange(100, 100 + n, dtype=np.int64),
        timestamps=np.full(n, 1_700_000_000_000, np.int64),
        ranges={0: OffsetRange(0, 100, 100 + n)} if n else {},
        nbytes=sum(len(v) for v in values if v),
        headers=list(headers) if headers is not None else None,
    )


def framed(schema_id: int, payload: bytes) -> bytes:
    """Confluent wire format: magic byte, 4-byte schema id, payload."""
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


def avro_bytes(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def unique(prefix: str) -> str:
    """A fresh subject name: the session's registry is shared by all tests."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- Protobuf: two files built as descriptors (no protoc needed), one importing the other -------


def protobuf_classes() -> dict[str, Any]:
    """Message classes of ``shop/common.proto`` (Money) and ``shop/order.proto`` (Item, Order,
    Order.Line) in a private descriptor pool."""
    from google.protobuf import (
        descriptor_pb2,
        descriptor_pool,
        duration_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )
    from google.protobuf.message_factory import GetMessageClass

    f = descriptor_pb2.FieldDescriptorProto
    common = descriptor_pb2.FileDescriptorProto(
        name="shop/common.proto", package="shop", syntax="proto3"
    )
    money = common.message_type.add(name="Money")
    money.field.add(name="units", number=1, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    money.field.add(name="currency", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)

    order_file = descriptor_pb2.FileDescriptorProto(
        name="shop/order.proto",
        package="shop",
        syntax="proto3",
        dependency=[
            "shop/common.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/struct.proto",
        ],
    )
    status = order_file.enum_type.add(name="Status")
    for name, number in (("NEW", 0), ("PAID", 1), ("SHIPPED", 5)):
        status.value.add(name=name, number=number)
    item = order_file.message_type.add(name="Item")
    item.field.add(name="sku", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    item.field.add(name="qty", number=2, type=f.TYPE_SINT32, label=f.LABEL_OPTIONAL)
    item.field.add(name="tags", number=3, type=f.TYPE_STRING, label=f.LABEL_REPEATED)
    order = order_file.message_type.add(name="Order")
    line = order.nested_type.add(name="Line")
    line.field.add(name="text", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry = order.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    order.oneof_decl.add(name="_coupon")

    def add(name: str, number: int, kind: int, repeated: bool = False, ref: str = "") -> Any:
        label = f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL
        field = order.field.add(name=name, number=number, type=kind, label=label)
        if ref:
            field.type_name = ref
        return field

    add("id", 1, f.TYPE_INT64)
    add("customer", 2, f.TYPE_STRING)
    add("placed", 3, f.TYPE_MESSAGE, ref=".google.protobuf.Timestamp")
    add("total", 4, f.TYPE_MESSAGE, ref=".shop.Money")
    add("items", 5, f.TYPE_MESSAGE, repeated=True, ref=".shop.Item")
    add("status", 6, f.TYPE_ENUM, ref=".shop.Status")
    add("weights", 7, f.TYPE_DOUBLE, repeated=True)
    add("counts", 8, f.TYPE_INT32, repeated=True)
    add("paid", 9, f.TYPE_BOOL)
    coupon = add("coupon", 10, f.TYPE_STRING)
    coupon.proto3_optional = True
    coupon.oneof_index = 0
    add("ttl", 11, f.TYPE_MESSAGE, ref=".google.protobuf.Duration")
    add("discount", 12, f.TYPE_MESSAGE, ref=".google.protobuf.Int64Value")
    add("extra", 13, f.TYPE_MESSAGE, ref=".google.protobuf.Struct")
    add("attrs", 14, f.TYPE_MESSAGE, repeated=True, ref=".shop.Order.AttrsEntry")
    add("ratio", 15, f.TYPE_FLOAT)
    add("big", 16, f.TYPE_UINT64)
    add("flags", 17, f.TYPE_FIXED32)
    add("blob", 18, f.TYPE_BYTES)

    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, wrappers_pb2, struct_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.Add(common)
    pool.Add(order_file)
    return {
        name: GetMessageClass(pool.FindMessageTypeByName(f"shop.{name}"))
        for name in ("Money", "Item", "Order", "Order.Line")
    }


def protobuf_order(cls: Any, i: int) -> Any:
    """A populated ``shop.Order``; fields vary with ``i`` so presence and defaults both occur."""
    o = cls(id=i * 1_000_003 - 5, customer=f"cüstomer {i}", status=[0, 1, 5, 7][i % 4])
    if i % 5:
        o.placed.seconds = 1_700_000_000 + i
        o.placed.nanos = (i * 1237) % 1_000_000_000
    if i % 3:
        o.total.units = i * 100
        o.total.currency = "EUR"
    for j in range(i % 4):
        o.items.add(sku=f"s{j}", qty=-j, tags=["a"] * j)
    o.weights.extend([j / 4 for j in range(i % 3)])
    o.counts.extend(range(-1, i % 4))
    o.paid = i % 2 == 1
    if i % 2:
        o.coupon = f"C{i}"
    if i % 7 == 0:
        o.ttl.seconds = -i
        o.ttl.nanos = -5000
    if i % 4 == 1:
        o.discount.value = i
    if i % 6 == 0:
        o.extra.update({"k": i, "list": [1, "x", None]})
    for j in range(i % 3):
        o.attrs[f"a{j}"] = i * j
    o.ratio = 0.25
    o.big = 2**64 - 1 - i
    o.flags = i
    o.blob = bytes([i % 256]) * (i % 3)
    return o


def protobuf_expected(msg: Any) -> dict[str, Any]:
    """What the Arrow row holds for ``msg``: the oracle is protobuf's own parser."""
    import datetime as dt

    import pyarrow as pa
    from google.protobuf import json_format

    utc = dt.UTC
    desc = msg.DESCRIPTOR
    status = desc.fields_by_name["status"].enum_type.values_by_number.get(msg.status)
    return {
        "id": msg.id,
        "customer": msg.customer,
        "placed": dt.datetime(1970, 1, 1, tzinfo=utc)
        + dt.timedelta(microseconds=msg.placed.seconds * 10**6 + msg.placed.nanos // 1000)
        if msg.HasField("placed")
        else None,
        "total": {"units": msg.total.units, "currency": msg.total.currency}
        if msg.HasField("total")
        else None,
        "items": [{"sku": x.sku, "qty": x.qty, "tags": list(x.tags)} for x in msg.items],
        "status": status.name if status is not None else str(msg.status),
        "weights": list(msg.weights),
        "counts": list(msg.counts),
        "paid": msg.paid,
        "coupon": msg.coupon if msg.HasField("coupon") else None,
        "ttl": pa.MonthDayNano([0, 0, msg.ttl.seconds * 10**9 + msg.ttl.nanos])
        if msg.HasField("ttl")
        else None,
        "discount": msg.discount.value if msg.HasField("discount") else None,
        "extra": json.dumps(json_format.MessageToDict(msg.extra), sort_keys=True)
        if msg.HasField("extra")
        else None,
        "attrs": sorted(msg.attrs.items()),
        "ratio": msg.ratio,
        "big": msg.big,
        "flags": msg.flags,
        "blob": msg.blob,
    }
