"""kafka-etl: exactly-once loads from Kafka into warehouses.

The code lives in four packages with one owner each: ``connector`` (Kafka side), ``sinks``
(warehouse side), ``pipelines`` (definitions, runner, CLI) and ``dagster_project``. This package
holds only what all of them share: the error taxonomy.
"""

__version__ = "0.1.0"
