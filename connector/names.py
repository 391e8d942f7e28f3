"""Names defined once and read everywhere, importing nothing heavy (the config models use them
to validate a file offline, in well under a second)."""

from __future__ import annotations

from typing import Literal

# The Kafka coordinates of a row: its identity in append mode, a dead letter's key.
IDENTITY_COLUMNS = ("_topic", "_partition", "_offset")
# The metadata columns every table gets, before the message's own fields.
METADATA_COLUMNS = (*IDENTITY_COLUMNS, "_timestamp", "_key")

# What a Debezium change event adds beside them (``envelope: debezium``): the operation, when the
# source database made the change, and the change's position in the source's log. A table gets the
# position columns its source has: PostgreSQL's LSN, MySQL's binlog file and position and GTID.
OP_COLUMN = "_op"
SOURCE_TS_COLUMN = "_source_ts"
SOURCE_POSITION_COLUMNS = {  # column -> the field of Debezium's ``source`` block
    "_source_lsn": "lsn",
    "_source_file": "file",
    "_source_pos": "pos",
    "_source_gtid": "gtid",
}
CHANGE_COLUMNS = (OP_COLUMN, SOURCE_TS_COLUMN, *SOURCE_POSITION_COLUMNS)

Envelope = Literal["none", "debezium"]
ENVELOPES: tuple[Envelope, ...] = ("none", "debezium")
# The value formats a Debezium envelope can arrive in (the JSON converter, with or without
# schemas, and the Avro converter through a schema registry).
ENVELOPE_FORMATS = frozenset({"json", "avro"})

Format = Literal["json", "avro", "protobuf", "json_schema", "string", "bytes"]
FORMATS: tuple[Format, ...] = ("json", "avro", "protobuf", "json_schema", "string", "bytes")
# The formats a schema registry serves (and the Confluent wire format frames).
REGISTRY_FORMATS = frozenset({"avro", "protobuf", "json_schema"})

# Settings the runner owns, which a pipelines file may not set. Offsets come from the sink's
# checkpoint table, never from the group.
MANAGED_SETTINGS: dict[str, str | int | float | bool] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "error",  # an offset out of range is reported, never silently moved
    "enable.partition.eof": True,
}
# The only isolation a load takes: anything else would load aborted transactions' messages.
ISOLATION_LEVEL = "read_committed"
