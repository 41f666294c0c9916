"""The exchange collector: venue websockets (and the REST calls their protocols need) into raw envelopes.

``settings`` and ``config`` read what to collect, ``plan`` resolves instruments and lays out connections,
``connection`` keeps one connection healthy (``backoff``, ``rest``), ``source`` runs connections as Bytewax input
partitions, ``messages`` turns envelopes into Kafka messages.
"""
