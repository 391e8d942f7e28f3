"""kafka-etl: exactly-once loads from Kafka into warehouses.

The code lives in four packages with one owner each: ``connector`` (Kafka side), ``sinks``
(warehouse side), ``pipelines`` (definitions, runner, CLI) and ``dagster_project``. This package
holds only what all of them share: the error taxonomy (``errors``) and the handling of secrets
(``secrets``: the one redaction function and the types that hold secrets).
"""

__version__ = "0.1.0"
