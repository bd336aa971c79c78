"""Pieces every process kind shares (Kafka clients and topics, records to write, deferral, DNS,
control commands, the knowledge base as configured). Below ``streams``, ``senders`` and
``dashboard``: it imports none of them."""
