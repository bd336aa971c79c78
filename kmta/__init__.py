"""kmta: an adaptive bulk-email MTA built as a Kafka stream-processing pipeline."""
__version__ = "0.1.0"
