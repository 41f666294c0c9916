"""What the collector produces to Kafka: the replay's raw messages, and dead letters in the dead-letter schema."""

from __future__ import annotations

from connectors.avro_sink import AvroEncoder
from connectors.collector.messages import COLLECTOR_FLOW, keyed_dead_letter, raw_envelope
from connectors.config import Settings
from operators.dead_letter import SourceRef, dead_letter
from schemas.serde import codec_for
from tests.collector_support import RECORDED
from tests.support import envelopes


def test_envelopes_go_to_raw_and_dead_letters_to_dead_letter() -> None:
    env = envelopes(RECORDED["okx"].path)[0]
    rejected = dead_letter(
        COLLECTOR_FLOW, "on_recv", "okx.public.0: framer failed", "internal_error", SourceRef(), b"x"
    )
    assert (raw_envelope(env), keyed_dead_letter(env)) == (env, None)
    assert raw_envelope(rejected) is None
    keyed = keyed_dead_letter(
        dead_letter(COLLECTOR_FLOW, "on_recv", "why", "internal_error", SourceRef(), b"{", exchange="okx")
    )
    assert keyed is not None and keyed[0] == "okx"
    message = AvroEncoder(Settings(), COLLECTOR_FLOW)(keyed)
    assert message.topic == "dead_letter" and message.key == b"okx"
    assert ("dlq.reason", b"why") in (message.headers or [])
    decoded = codec_for("dead_letter", None).decode(message.value)
    assert (decoded["flow"], decoded["payload"], decoded["exchange"]) == ("collect_cex", b"{", "okx")
