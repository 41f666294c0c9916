"""The keyed, stateful normalize step: raw envelopes of one instrument in, standardized records out.

Used by ``flows.normalize_cex`` (from Kafka) and by its offline mode (from a capture file). One
`NormalizeLogic` per instrument key holds that instrument's `InstrumentNormalizer`; Bytewax snapshots it
(pickled, so the snapshot is an immutable copy) for recovery. No input can crash the step: unusable frames,
and even bugs surfacing on odd input, become dead letters with the reason.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import msgspec
from bytewax.operators import StatefulBatchLogic

from connectors.metrics import BOOK_RESYNCS, BOOKS_OUT_OF_SYNC, RECORDS_IN, count_outputs
from operators.dead_letter import SourceRef, dead_letter
from operators.records import Output
from operators.symbols import Instrument
from operators.venues import VENUES
from operators.venues.base import BadFrame, InstrumentNormalizer, NormalizerSettings
from schemas.raw import EnvelopeError, RawEnvelope

__all__ = [
    "FLOW",
    "BatchedNormalizeLogic",
    "ConsumeError",
    "Item",
    "NormalizeLogic",
    "batched_logic_builder",
    "group_by_key",
    "key_raw_record",
    "logic_builder",
    "normalize_envelopes",
    "read_envelope",
]

FLOW = "normalize_cex"
LOG = logging.getLogger(__name__)


class ConsumeError(msgspec.Struct, frozen=True, gc=False):
    """A raw record Kafka could not deliver intact; the normalize step dead-letters it under its key."""

    source: SourceRef
    reason: str


#: What flows into the normalize step for one key: a raw Kafka record, parsed in the step (after routing by its
#: Kafka key, so workers exchange the bytes once and never a parsed copy), an envelope parsed already (offline
#: mode, unkeyed records) with where it came from, or a consume error.
Item = SourceRef | tuple[RawEnvelope, SourceRef] | ConsumeError


def read_envelope(source: SourceRef) -> RawEnvelope | Output:
    """The envelope in a raw Kafka value, or a dead letter saying why it is unusable."""
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
    return env


def key_raw_record(source: SourceRef) -> tuple[str, Item]:
    """A raw record under its instrument key: the Kafka key the collectors write, read without parsing the value.

    A record without a usable key is parsed here to find its instrument (or, when unusable, keyed ``""`` and
    dead-lettered by the normalize step).
    """
    if source.key:
        try:
            return source.key.decode(), source
        except UnicodeDecodeError:
            pass
    env = read_envelope(source)
    if isinstance(env, RawEnvelope):
        return env.key, (env, source)
    return "", source


class NormalizeLogic(StatefulBatchLogic[Item, Output, bytes]):
    """Per-instrument logic for ``op.stateful_batch``."""

    def __init__(self, resume_state: bytes | None, settings: NormalizerSettings) -> None:
        self.settings = settings
        #: Whether this instrument's book resynced and has not been rebuilt yet (for the metrics gauge).
        self.out_of_sync = False
        self.normalizer: InstrumentNormalizer | None = pickle.loads(resume_state) if resume_state is not None else None

    def _adopt(self, env: RawEnvelope, source: SourceRef, out: list[Output]) -> InstrumentNormalizer | None:
        """The normalizer for an envelope not of the current instrument, or None after dead-lettering it.

        The first envelope of a key creates the key's normalizer (unless its Kafka key names another
        instrument); an envelope of another instrument afterwards would corrupt this one's state.
        """
        normalizer = self.normalizer
        if normalizer is None:
            if source.key and env.key.encode() != source.key:
                reason = f"raw record keyed {source.key!r} carries an envelope of {env.key}"
                out.append(self._dead(env, source, reason, "unexpected_key"))
                return None
            spec = VENUES[env.exchange]
            normalizer = spec.normalizer(Instrument(env.exchange, env.symbol, env.venue_symbol), self.settings)
            self.normalizer = normalizer
            return normalizer
        instrument = normalizer.instrument
        reason = f"raw record of {env.key} arrived under the key of {instrument.exchange}:{instrument.symbol}"
        out.append(self._dead(env, source, reason, "unexpected_key"))
        return None

    def on_batch(self, values: list[Item]) -> tuple[list[Output], bool]:
        out: list[Output] = []
        normalizer = self.normalizer
        exchange, symbol = (normalizer.instrument.exchange, normalizer.instrument.symbol) if normalizer else ("", "")
        for item in values:
            if isinstance(item, tuple):
                env, source = item
            elif isinstance(item, SourceRef):
                parsed = read_envelope(item)
                if not isinstance(parsed, RawEnvelope):
                    out.append(parsed)
                    continue
                env, source = parsed, item
            else:
                value = item.source.value or b""
                out.append(dead_letter(FLOW, "raw_in", item.reason, "kafka_error", item.source, value))
                continue
            if normalizer is None or env.symbol != symbol or env.exchange != exchange:
                adopted = self._adopt(env, source, out)
                if adopted is None:
                    continue
                normalizer = adopted
                exchange, symbol = normalizer.instrument.exchange, normalizer.instrument.symbol
            try:
                out += normalizer.process(env)
            except BadFrame as exc:
                out += exc.outputs
                out.append(self._dead(env, source, exc.reason, exc.error_type))
            except Exception as exc:  # a bug met on odd input must not stop the flow
                LOG.exception("normalizer failed on %s %s", env.key, env.channel)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                out += normalizer.abandon_books(env, reason)
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


def group_by_key(keyed: Iterable[tuple[str, Item]]) -> list[tuple[str, list[Item]]]:
    """``(key, item)`` pairs as one ``(key, [items])`` per key, each key's items in their order."""
    groups: dict[str, list[Item]] = {}
    for key, item in keyed:
        group = groups.get(key)
        if group is None:
            groups[key] = [item]
        else:
            group.append(item)
    return list(groups.items())


class BatchedNormalizeLogic(StatefulBatchLogic[list[Item], list[Output], bytes]):
    """`NormalizeLogic` over batches: a list of one instrument's items in, the list of their records out.

    The Kafka flow routes one item per instrument per input batch (`group_by_key`) and passes one list of
    records on, instead of one item per raw frame and per record: Bytewax's per-item cost (key extraction,
    routing, buffering, and pickling between processes) is then paid once per batch.
    """

    def __init__(self, resume_state: bytes | None, settings: NormalizerSettings) -> None:
        self.logic = NormalizeLogic(resume_state, settings)

    def on_batch(self, values: list[list[Item]]) -> tuple[list[list[Output]], bool]:
        items = values[0] if len(values) == 1 else [item for batch in values for item in batch]
        out, _ = self.logic.on_batch(items)
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return self.logic.snapshot()


def batched_logic_builder(settings: NormalizerSettings) -> Callable[[bytes | None], BatchedNormalizeLogic]:
    """The builder ``op.stateful_batch`` calls with a key's resume state, for batches of items."""
    return partial(BatchedNormalizeLogic, settings=settings)


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
