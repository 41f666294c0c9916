"""The keyed, stateful normalize step: raw envelopes of one instrument in, standardized records out.

Used by ``flows.normalize_cex`` (from Kafka) and by its offline mode (from a capture file). One
`NormalizeLogic` per instrument key holds that instrument's `InstrumentNormalizer`; Bytewax snapshots it
(pickled, so the snapshot is an immutable copy) for recovery. No input can crash the step: unusable frames,
and even bugs surfacing on odd input, become dead letters with the reason.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

from bytewax.operators import StatefulBatchLogic

from connectors.metrics import BOOK_RESYNCS, BOOKS_OUT_OF_SYNC, RECORDS_IN, count_outputs
from operators.dead_letter import SourceRef, dead_letter
from operators.records import Output
from operators.symbols import Instrument
from operators.venues import VENUES
from operators.venues.base import BadFrame, InstrumentNormalizer, NormalizerSettings
from schemas.raw import EnvelopeError, RawEnvelope

__all__ = ["FLOW", "Item", "NormalizeLogic", "logic_builder", "normalize_envelopes", "parse_raw"]

FLOW = "normalize_cex"
LOG = logging.getLogger(__name__)

#: What flows into the normalize step for one key.
Item = tuple[RawEnvelope, SourceRef]


def parse_raw(source: SourceRef) -> tuple[str, Item] | Output:
    """A raw Kafka value as ``(instrument key, item)``, or a dead letter saying why it is unusable."""
    value = source.value or b""
    try:
        env = RawEnvelope.from_json(value)
    except EnvelopeError as exc:
        kind = "malformed_json" if "not JSON" in str(exc) else "unexpected_shape"
        return dead_letter(FLOW, "parse_raw", str(exc), kind, source, value)
    if env.exchange not in VENUES:
        return dead_letter(
            FLOW,
            "parse_raw",
            f"unknown venue {env.exchange!r}; known: {', '.join(sorted(VENUES))}",
            "unknown_venue",
            source,
            value,
            env.receipt_ts,
            env.exchange,
            env.symbol,
        )
    return env.key, (env, source)


class NormalizeLogic(StatefulBatchLogic[Item, Output, bytes]):
    """Per-instrument logic for ``op.stateful_batch``."""

    def __init__(self, resume_state: bytes | None, settings: NormalizerSettings) -> None:
        self.settings = settings
        #: Whether this instrument's book resynced and has not been rebuilt yet (for the metrics gauge).
        self.out_of_sync = False
        self.normalizer: InstrumentNormalizer | None = pickle.loads(resume_state) if resume_state is not None else None

    def _normalizer(self, env: RawEnvelope) -> InstrumentNormalizer:
        normalizer = self.normalizer
        if normalizer is None:
            spec = VENUES[env.exchange]
            normalizer = spec.normalizer(Instrument(env.exchange, env.symbol, env.venue_symbol), self.settings)
            self.normalizer = normalizer
        return normalizer

    def on_batch(self, values: list[Item]) -> tuple[list[Output], bool]:
        if not values:
            return [], StatefulBatchLogic.RETAIN
        out: list[Output] = []
        normalizer = self._normalizer(values[0][0])  # one key per logic: every item is this instrument's
        for env, source in values:
            try:
                out.extend(normalizer.process(env))
            except BadFrame as exc:
                out.extend(exc.outputs)
                out.append(self._dead(env, source, exc.reason, exc.error_type))
            except Exception as exc:  # a bug met on odd input must not stop the flow
                LOG.exception("normalizer failed on %s %s", env.key, env.channel)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                out.extend(normalizer.abandon_books(env, reason))
                out.append(self._dead(env, source, reason, "internal_error"))
        self._count(len(values), out)
        return out, StatefulBatchLogic.RETAIN

    def _count(self, consumed: int, out: list[Output]) -> None:
        RECORDS_IN.labels(FLOW).inc(consumed)
        count_outputs(FLOW, out)
        for topic, record in out:
            if topic != "lob":
                continue
            action = record["action"]
            if action == "resync":
                BOOK_RESYNCS.labels(record["exchange"]).inc()
                if not self.out_of_sync:
                    self.out_of_sync = True
                    BOOKS_OUT_OF_SYNC.labels(record["exchange"]).inc()
            elif action == "snapshot" and self.out_of_sync:
                self.out_of_sync = False
                BOOKS_OUT_OF_SYNC.labels(record["exchange"]).dec()

    @staticmethod
    def _dead(env: RawEnvelope, source: SourceRef, reason: str, error_type: str) -> Output:
        payload = source.value if source.value is not None else env.to_json()
        return dead_letter(
            FLOW, "normalize", reason, error_type, source, payload, env.receipt_ts, env.exchange, env.symbol
        )

    def snapshot(self) -> bytes:
        return pickle.dumps(self.normalizer, protocol=pickle.HIGHEST_PROTOCOL)


def logic_builder(settings: NormalizerSettings) -> Any:
    """The builder ``op.stateful_batch`` calls with a key's resume state."""

    def build(resume_state: bytes | None) -> NormalizeLogic:
        return NormalizeLogic(resume_state, settings)

    return build


def normalize_envelopes(
    envelopes: Iterable[RawEnvelope], settings: NormalizerSettings | None = None, source: str = "capture"
) -> Iterator[tuple[str, Output]]:
    """The normalize step without Bytewax: ``(key, (topic, record))`` in input order, one logic per key."""
    logics: dict[str, NormalizeLogic] = {}
    config = settings or NormalizerSettings()
    ref = SourceRef(topic=source)
    for env in envelopes:
        logic = logics.get(env.key)
        if logic is None:
            logic = logics[env.key] = NormalizeLogic(None, config)
        outputs, _ = logic.on_batch([(env, ref)])
        for output in outputs:
            yield env.key, output
