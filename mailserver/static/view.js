// The web view: draws every session from the server's event stream (/events).
//
// Everything a client typed (HELO names, addresses, subjects, every line) is drawn as
// text: the DOM is built with createElement and text nodes only, never from HTML strings.
// The server sends lines already masked, as its log has them (mailserver/logs.py).
"use strict";

const SHOWN_FINISHED = 4; // finished sessions still drawn in full beside the open ones
const MAX_DELIVERIES = 100; // "where mail went" keeps this many messages

const sessions = new Map(); // id -> {open, events, state, finished, lane}
let bodiesOn = false; // message text: off until the teacher turns it on, forgotten on reload
let replay = null; // {session, shown}

// -- small DOM helpers: text only ------------------------------------------------------

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function byId(id) {
  return document.getElementById(id);
}

function size(octets) {
  if (octets < 1024) return `${octets} bytes`;
  if (octets < 1024 * 1024) return `${(octets / 1024).toFixed(1)} KB`;
  return `${(octets / 1024 / 1024).toFixed(1)} MB`;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// -- one session as a sequence diagram ------------------------------------------------

function arrowRow(direction, label, note) {
  // C: client to server (solid arrow, pointing right); S: server to client (dashed, pointing left).
  const toServer = direction === "C";
  const row = el("div", `row ${toServer ? "c2s" : "s2c"}`);
  const arrow = el("div", "arrow");
  arrow.append(el("span", "who", toServer ? "C:" : "S:"), el("span", "said", label));
  if (note) arrow.append(el("span", "why", note));
  row.append(el("div", "life"), arrow, el("div", "life"));
  return row;
}

function messageRow(event) {
  const label = `✉ message: ${plural(event.lines, "line")}, ${size(event.octets)}`;
  const row = arrowRow(event.dir, "", null);
  const said = row.querySelector(".said");
  const button = el("button", "fold", label);
  button.type = "button";
  button.title = "show message text is off";
  button.addEventListener("click", () => toggleBody(row, event));
  said.append(button);
  row.classList.add("message");
  return row;
}

async function toggleBody(row, event) {
  const open = row.querySelector(".body");
  if (open) {
    open.remove();
    return;
  }
  if (!bodiesOn) return; // hidden until the teacher turns message text on: not even fetched
  const answer = await fetch(`message?session=${event.id}&n=${event.n}`);
  const text = answer.ok ? (await answer.json()).join("\n") : "(no longer kept)";
  if (bodiesOn && !row.querySelector(".body")) row.querySelector(".arrow").append(el("pre", "body", text));
}

function flowRow(event) {
  const row = el("div", "row flow");
  const list = el("ul", "flows");
  for (const item of event.to) list.append(flowItem(event.sender, item));
  row.append(el("div", "life"), el("div", "arrow", el("span", "said", "mail accepted:"), list), el("div", "life"));
  return row;
}

function flowItem(sender, item) {
  const from = sender || "<>";
  if (item.inbox) return el("li", "to-inbox", `${from} ⇒ ${item.inbox}'s inbox (${item.address})`);
  return el("li", "to-sent", `${from} → ${item.address}: kept in Sent: not a user of this server`);
}

function rowFor(event) {
  if (event.type === "line") return arrowRow(event.dir, event.text, event.explain);
  if (event.type === "message") return messageRow(event);
  if (event.type === "delivery") return flowRow(event);
  return null;
}

// A reply's last line says so: SMTP's "250 " after "250-" lines (RFC 5321 4.2.1); POP3's block
// lines after "+OK" are no status line at all (RFC 1939 3). Either way one arrow carries them all.
const STATUS_LINE = /^(\d{3}[ -]|\+OK( |$)|-ERR( |$)|\+( |$))/;

function goesOn(row, event) {
  if (!row || event.type !== "line" || event.dir !== "S" || !row.classList.contains("s2c")) return false;
  return row.dataset.more === "yes" || !STATUS_LINE.test(event.text);
}

function addEvent(diagram, event) {
  const last = diagram.lastElementChild;
  if (goesOn(last, event)) {
    last.querySelector(".said").append(document.createTextNode(`\n${event.text}`));
    if (event.explain) last.querySelector(".arrow").append(el("span", "why", event.explain));
  } else {
    const row = rowFor(event);
    if (!row) return;
    diagram.append(row);
  }
  if (event.type === "line" && event.dir === "S") diagram.lastElementChild.dataset.more = /^\d{3}-/.test(event.text) ? "yes" : "no";
}

function laneHead(session) {
  const state = session.state || {};
  const head = el("header", "lane-head");
  head.append(
    el("span", "proto", session.open.protocol),
    el("span", "peer", session.open.peer),
    el("span", state.tls ? "tls on" : "tls off", state.tls ? "TLS 🔒" : "no TLS"),
    el("span", "user", state.user ? `user ${state.user}` : "not logged in"),
    el("span", "state", session.finished ? "finished" : state.state || "connected"),
  );
  return head;
}

function drawLane(session, events) {
  const lane = el("article", "lane");
  lane.dataset.session = String(session.open.id);
  if (session.finished) lane.classList.add("finished");
  const diagram = el("div", "diagram", el("div", "ends", el("span", "", "client"), el("span", "", "server")));
  for (const event of events) addEvent(diagram, event);
  lane.append(laneHead(session), diagram);
  return lane;
}

// -- the sessions on the page ----------------------------------------------------------

function apply(event) {
  if (event.type === "open") {
    sessions.set(event.id, { open: event, events: [], state: null, finished: false, lane: null });
    return;
  }
  const session = sessions.get(event.id);
  if (!session) return;
  session.events.push(event);
  if (event.type === "state") session.state = event;
  if (event.type === "close") session.finished = true;
  if (event.type === "delivery") addDelivery(event);
}

function refreshLane(session, event) {
  if (!session.lane) return;
  if (event.type === "state" || event.type === "close") {
    session.lane.querySelector(".lane-head").replaceWith(laneHead(session));
    if (session.finished) session.lane.classList.add("finished");
    return;
  }
  addEvent(session.lane.querySelector(".diagram"), event);
}

function shownSessions() {
  const open = [];
  const finished = [];
  for (const session of sessions.values()) (session.finished ? finished : open).push(session);
  return [...finished.slice(-SHOWN_FINISHED), ...open];
}

function drawLanes() {
  const wanted = shownSessions();
  const keep = new Set(wanted);
  for (const session of sessions.values()) {
    if (session.lane && !keep.has(session)) {
      session.lane.remove();
      session.lane = null;
    }
  }
  const lanes = byId("lanes");
  for (const session of wanted.reverse()) {
    if (!session.lane) session.lane = drawLane(session, session.events);
    lanes.append(session.lane); // newest first
  }
  byId("no-sessions").hidden = sessions.size > 0;
}

function trimHistory() {
  // The server keeps 200 finished sessions; so does the page.
  const finished = [...sessions.values()].filter((s) => s.finished);
  for (const session of finished.slice(0, Math.max(0, finished.length - 200))) sessions.delete(session.open.id);
}

// -- finished sessions: the list, its filter, and the replay ----------------------------

function drawFinished() {
  const user = byId("filter-user").value.trim().toLowerCase();
  const protocol = byId("filter-protocol").value;
  const list = byId("finished");
  const items = [];
  for (const session of sessions.values()) {
    if (!session.finished) continue;
    const who = (session.state && session.state.user) || "";
    if (protocol && session.open.protocol !== protocol) continue;
    if (user && !who.toLowerCase().includes(user)) continue;
    const when = new Date(session.open.time * 1000).toLocaleTimeString();
    const button = el("button", "replay-open", `${when} ${session.open.protocol} ${session.open.peer} ${who || "(no login)"}`);
    button.type = "button";
    button.addEventListener("click", () => startReplay(session));
    items.unshift(el("li", "", button));
  }
  list.replaceChildren(...items);
}

function startReplay(session) {
  replay = { session, shown: 1 };
  byId("replay").hidden = false;
  drawReplay();
}

function replayRows() {
  return replay.session.events.filter((event) => rowFor(event) !== null);
}

function drawReplay() {
  const rows = replayRows();
  replay.shown = Math.max(0, Math.min(replay.shown, rows.length));
  const lane = drawLane(replay.session, rows.slice(0, replay.shown));
  byId("replay-lane").replaceChildren(lane);
  byId("replay-where").textContent = `line ${replay.shown} of ${rows.length}`;
}

function stepReplay(to) {
  if (!replay) return;
  replay.shown = to(replay.shown, replayRows().length);
  drawReplay();
}

// -- who is here, where mail went, the mailboxes -----------------------------------------

function addDelivery(event) {
  const list = byId("deliveries");
  const item = el("li", "delivery");
  const flows = el("ul", "flows");
  for (const to of event.to) flows.append(flowItem(event.sender, to));
  item.append(el("span", "", `${size(event.octets)}`), flows);
  list.prepend(item);
  while (list.children.length > MAX_DELIVERIES) list.lastChild.remove();
  byId("no-mail").hidden = true;
}

function drawStatus(status) {
  const who = byId("who");
  const entries = [];
  const add = (term, ...values) => {
    entries.push(el("dt", "", term));
    for (const value of values) entries.push(el("dd", "", value));
  };
  for (const protocol of ["SMTP", "POP3"]) {
    const users = status.logged_in[protocol] || [];
    add(`logged in over ${protocol}`, users.length ? users.join(", ") : "nobody");
  }
  add("connections", `${status.connections} of ${status.max_connections}`);
  const addresses = Object.entries(status.per_address).map(
    ([address, count]) => `${address}: ${count} of ${status.max_per_address}`,
  );
  if (addresses.length) add("per address", ...addresses);
  const held = status.held_back.map((hold) => {
    const what = hold.name === null ? "every name" : hold.name || "a name that is no account";
    return `${hold.address}, ${what}: ${hold.seconds} s left`;
  });
  add("held back by the login throttle", ...(held.length ? held : ["nobody"]));
  who.replaceChildren(...entries);
  const rows = status.mailboxes.map((box) => el("tr", "", el("td", "", box.user), el("td", "", box.inbox), el("td", "", box.sent)));
  byId("mailboxes").tBodies[0].replaceChildren(...rows);
}

// -- the stream -------------------------------------------------------------------------

function reset() {
  for (const session of sessions.values()) if (session.lane) session.lane.remove();
  sessions.clear();
  byId("deliveries").replaceChildren();
  byId("no-mail").hidden = false;
}

function receive(event) {
  if (event.type === "status") {
    drawStatus(event);
    return;
  }
  if (event.type === "history") {
    reset();
    for (const record of event.sessions) {
      apply(record);
      for (const inner of record.events) apply(inner);
    }
  } else {
    apply(event);
    const session = sessions.get(event.id);
    if (session) refreshLane(session, event);
  }
  if (event.type === "history" || event.type === "open" || event.type === "close") {
    trimHistory();
    drawLanes();
    drawFinished();
  }
}

function setLink(text, lost) {
  const link = byId("link");
  link.textContent = text;
  link.classList.toggle("lost", lost);
}

function connect() {
  const source = new EventSource("events");
  source.addEventListener("open", () => setLink("● live", false));
  source.addEventListener("message", (message) => receive(JSON.parse(message.data)));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (a new token after a restart, say): EventSource gives up, so we try again ourselves.
      setLink("✕ lost the server: trying again… (after a restart with a token, open its new address)", true);
      setTimeout(connect, 2000);
    } else {
      setLink("✕ lost the server: reconnecting…", true);
    }
  });
}

function setUp() {
  byId("bodies").checked = false;
  byId("large").checked = false;
  byId("bodies").addEventListener("change", (change) => {
    bodiesOn = change.target.checked;
    document.body.classList.toggle("bodies-on", bodiesOn);
    if (!bodiesOn) for (const body of document.querySelectorAll(".body")) body.remove();
  });
  byId("large").addEventListener("change", (change) =>
    document.documentElement.classList.toggle("large", change.target.checked),
  );
  byId("filter-user").addEventListener("input", drawFinished);
  byId("filter-protocol").addEventListener("change", drawFinished);
  byId("replay-first").addEventListener("click", () => stepReplay(() => 1));
  byId("replay-back").addEventListener("click", () => stepReplay((shown) => shown - 1));
  byId("replay-next").addEventListener("click", () => stepReplay((shown) => shown + 1));
  byId("replay-all").addEventListener("click", () => stepReplay((_, total) => total));
  byId("replay-close").addEventListener("click", () => {
    byId("replay").hidden = true;
    replay = null;
  });
  connect();
}

document.addEventListener("DOMContentLoaded", setUp);
