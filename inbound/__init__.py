"""``kmta inbound`` and ``kmta unsubscribe``: what comes back after delivery.

* ``receiver``: an SMTP server (aiosmtpd) for the return-path domains; every message is on
  the inbound topic (acks=all) before it is answered 250;
* ``processor``: consumes the inbound topic in a consumer group and turns each message into
  results events, suppression records or a dead letter (``kmta.policy.inbound``);
* ``web``: the RFC 8058 one-click unsubscribe server.

Any number of processes of each; they share nothing but Kafka.
"""
