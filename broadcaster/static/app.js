// marketpipe live page: picks an instrument, subscribes to its order book and one more channel over the
// broadcaster's websocket protocol (see /protocol), rebuilds the book by the lob replay rule, shows records.
"use strict";

const FEED_CHANNELS = ["trades", "ticker", "candles", "funding", "open_interest", "liquidations"];
const FEED_COLUMNS = {
  trades: ["time", "side", "price", "size", "trade_id"],
  ticker: ["time", "bid_price", "bid_size", "ask_price", "ask_size", "last_price"],
  candles: ["time", "interval", "open", "high", "low", "close", "volume"],
  funding: ["time", "rate", "predicted_rate", "mark_price"],
  open_interest: ["time", "open_interest", "open_interest_value"],
  liquidations: ["time", "side", "price", "size", "status"],
};
const MAX_FEED_ROWS = 60;
const BOOK_DEPTH = 15;

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, nextId: 1, subscriptions: [], instruments: {}, frames: 0, gaps: 0, lastOffset: new Map(),
  book: { bids: new Map(), asks: new Map(), valid: false }, bookDirty: false,
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "status error" : "status";
}

function options(select, values, keep) {
  const previous = keep ? select.value : null;
  select.replaceChildren(...values.map((v) => new Option(v, v)));
  if (previous && values.includes(previous)) select.value = previous;
}

async function loadInstruments() {
  try {
    const response = await fetch("/instruments");
    state.instruments = (await response.json()).channels;
  } catch (err) {
    return;
  }
  const venues = new Set();
  for (const keys of Object.values(state.instruments)) for (const key of keys) venues.add(key.split(":")[0]);
  const hadVenue = $("venue").value;
  options($("venue"), [...venues].sort(), true);
  fillInstruments();
  if (!hadVenue && $("instrument").value) resubscribe();
}

function fillInstruments() {
  const venue = $("venue").value;
  const symbols = new Set();
  for (const keys of Object.values(state.instruments))
    for (const key of keys) if (key.startsWith(venue + ":")) symbols.add(key.slice(venue.length + 1));
  options($("instrument"), [...symbols].sort(), true);
}

function send(op, fields = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ id: state.nextId++, op, ...fields }));
}

function sameSubscription(a, b) {
  return a.channel === b.channel && a.exchange === b.exchange && a.symbol === b.symbol;
}

function resubscribe() {
  // Change only what differs, subscribing before unsubscribing, so no record falls between the two.
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return; // onopen subscribes
  const exchange = $("venue").value, symbol = $("instrument").value, channel = $("channel").value;
  const wanted = exchange && symbol
    ? [{ channel: "lob", exchange, symbol }, { channel, exchange, symbol }] : [];
  const added = wanted.filter((w) => !state.subscriptions.some((s) => sameSubscription(s, w)));
  const removed = state.subscriptions.filter((s) => !wanted.some((w) => sameSubscription(s, w)));
  if (added.some((a) => a.channel === "lob") || !wanted.length) resetBook();
  if (added.some((a) => a.channel !== "lob") || !wanted.length) {
    $("feed-rows").replaceChildren();
    renderFeedHead(channel);
  }
  for (const sub of added) send("subscribe", sub);
  for (const sub of removed) send("unsubscribe", sub);
  state.subscriptions = wanted;
}

function resetBook() {
  state.book = { bids: new Map(), asks: new Map(), valid: false };
  state.bookDirty = true;
}

function applyBook(record) {
  const book = state.book;
  if (record.action === "resync") {
    resetBook();
    state.book.reason = record.reason;
  } else if (record.action === "snapshot") {
    book.bids = new Map(record.bid_price.map((p, i) => [p, record.bid_size[i]]));
    book.asks = new Map(record.ask_price.map((p, i) => [p, record.ask_size[i]]));
    book.valid = true;
  } else if (book.valid) {
    for (const [side, prices, sizes] of [[book.bids, record.bid_price, record.bid_size],
                                          [book.asks, record.ask_price, record.ask_size]]) {
      prices.forEach((p, i) => (sizes[i] === 0 ? side.delete(p) : side.set(p, sizes[i])));
    }
  }
  state.bookDirty = true;
}

function renderBook() {
  if (!state.bookDirty) return;
  state.bookDirty = false;
  const { bids, asks, valid } = state.book;
  const badge = $("book-state");
  badge.textContent = valid ? "live" : (state.book.reason || "no book");
  badge.className = "badge " + (valid ? "valid" : "invalid");
  const topBids = [...bids.entries()].sort((a, b) => b[0] - a[0]).slice(0, BOOK_DEPTH);
  const topAsks = [...asks.entries()].sort((a, b) => a[0] - b[0]).slice(0, BOOK_DEPTH);
  const rows = [];
  for (let i = 0; i < Math.max(topBids.length, topAsks.length); i++) {
    const tr = document.createElement("tr");
    tr.className = "level";
    const [bp, bs] = topBids[i] || ["", ""], [ap, as] = topAsks[i] || ["", ""];
    for (const [text, cls] of [[bs, "bid"], [bp, "bid"], [ap, "ask"], [as, "ask"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = cls;
      tr.append(td);
    }
    rows.push(tr);
  }
  $("book-rows").replaceChildren(...rows);
}

function renderFeedHead(channel) {
  $("feed-title").textContent = channel;
  const tr = document.createElement("tr");
  for (const column of FEED_COLUMNS[channel]) {
    const th = document.createElement("th");
    th.textContent = column;
    tr.append(th);
  }
  $("feed-head").replaceChildren(tr);
}

function addFeedRow(channel, record) {
  const tr = document.createElement("tr");
  tr.className = "record " + (record.side || "");
  for (const column of FEED_COLUMNS[channel]) {
    const td = document.createElement("td");
    td.textContent = column === "time"
      ? new Date(record.event_timestamp / 1000).toISOString().slice(11, 23)
      : (record[column] ?? "");
    tr.append(td);
  }
  const rows = $("feed-rows");
  rows.prepend(tr);
  while (rows.children.length > MAX_FEED_ROWS) rows.lastChild.remove();
}

function onFrame(frame) {
  state.frames++;
  if (frame.type === "data" || frame.type === "snapshot") {
    // Gap detection: `prev` is the offset of this key's previous record on its topic.
    const id = frame.channel + "|" + frame.key;
    const last = state.lastOffset.get(id);
    if (frame.type === "data" && last !== undefined && frame.prev !== last) state.gaps++;
    state.lastOffset.set(id, frame.offset);
    if (frame.key !== $("venue").value + ":" + $("instrument").value) return;
    if (frame.channel === "lob") applyBook(frame.data);
    else if (frame.channel === $("channel").value) addFeedRow(frame.channel, frame.data);
  } else if (frame.type === "welcome") {
    $("replica").textContent = frame.replica;
    setStatus("connected");
  } else if (frame.type === "error") {
    setStatus(`error ${frame.code}: ${frame.message}`, true);
  }
}

function connect() {
  if (state.ws) state.ws.close();
  const key = $("api-key").value || new URLSearchParams(location.search).get("api_key");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws` + (key ? `?api_key=${encodeURIComponent(key)}` : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  state.subscriptions = [];
  ws.onopen = () => resubscribe();
  ws.onmessage = (event) => {
    // One websocket message carries one or more frames separated by newlines.
    for (const line of event.data.split("\n")) onFrame(JSON.parse(line));
  };
  ws.onclose = (event) => {
    if (state.ws === ws) setStatus(`disconnected (${event.code} ${event.reason || ""})`, true);
  };
}

function tick() {
  renderBook();
  $("frames").textContent = state.frames;
  $("gaps").textContent = state.gaps;
  requestAnimationFrame(tick);
}

options($("channel"), FEED_CHANNELS);
renderFeedHead("trades");
$("venue").addEventListener("change", () => { fillInstruments(); resubscribe(); });
$("instrument").addEventListener("change", resubscribe);
$("channel").addEventListener("change", resubscribe);
$("connect").addEventListener("click", connect);
connect();
loadInstruments();
setInterval(loadInstruments, 5000);
requestAnimationFrame(tick);
