"""semarize-connector: transcript events on Kafka -> Semarize runs -> results on Kafka."""

__version__ = "0.1.0"
