"""Prometheus metrics of one broadcaster, in a registry of its own (``/metrics``).

Counters are incremented per batch or per websocket message, never per record and client.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["BroadcasterMetrics"]


class BroadcasterMetrics:
    """Every metric the broadcaster exports; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("broadcaster_connections", "Open websocket connections.", registry=r)
        self.subscriptions = Gauge("broadcaster_subscriptions", "Active subscriptions, all connections.", registry=r)
        self.records_in = Counter(
            "broadcaster_records_in_total", "Records consumed from Kafka, per topic.", ["topic"], registry=r
        )
        self.decode_errors = Counter(
            "broadcaster_decode_errors_total", "Records that could not be decoded (not sent).", ["topic"], registry=r
        )
        self.frames_out = Counter(
            "broadcaster_frames_out_total", "Frames written to websockets (records, snapshots, acks).", registry=r
        )
        self.messages_out = Counter(
            "broadcaster_messages_out_total", "Websocket messages written (one or more frames each).", registry=r
        )
        self.requests = Counter(
            "broadcaster_requests_total", "Client requests, per op or error code.", ["outcome"], registry=r
        )
        self.slow_clients = Counter(
            "broadcaster_slow_clients_total",
            "Clients whose queue overflowed, per action taken (disconnected, conflated).",
            ["action"],
            registry=r,
        )
        self.rejected_connections = Counter(
            "broadcaster_rejected_connections_total", "Connections refused, per reason.", ["reason"], registry=r
        )
        self.queue_depth = Gauge("broadcaster_queue_depth", "Frames queued, all connections.", registry=r)
        self.max_queue_depth = Gauge("broadcaster_max_queue_depth", "Frames queued, fullest connection.", registry=r)
        self.lag = Gauge(
            "broadcaster_consumer_lag",
            "Records behind the high watermark, per partition (a floor on brokers reporting batch bases).",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge("broadcaster_ready", "1 when every partition is assigned and caught up.", registry=r)

    def watch_queues(self, depths: Callable[[], list[int]]) -> None:
        """Queue gauges computed at scrape time from the live outboxes."""
        self.queue_depth.set_function(lambda: float(sum(depths())))
        self.max_queue_depth.set_function(lambda: float(max(depths(), default=0)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
