"""The broadcaster: websocket fan-out of the standardized Kafka topics, with a live page.

Modules: `settings` (configuration), `protocol` (client requests), `frames` (server frames), `subscriptions`
(routing), `outbox` (per-connection queue and slow-client policy), `books` (order books for lob snapshots),
`hub` (fan-out), `feed` (Kafka consumer), `access` (keys, origins, rate limits), `session` (one connection),
`metrics`, `app` (FastAPI). The protocol is described in ``broadcaster/PROTOCOL.md``.
"""

__all__: list[str] = []
