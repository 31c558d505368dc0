// The DayOne customer page: log in, start a chat, wait, talk, end, read back, resume.
// Only the public contract of docs/protocol.md is used; see docs/customer-web.md for the flows.
// Every piece of text that comes from the server or the user goes into the page through
// textContent, never as markup.

import { Api } from "./api.js";
import { ChatSocket } from "./socket.js";

const config = JSON.parse(document.getElementById("customer-config").textContent);
const $ = (id) => document.getElementById(id);

const LIVE = new Set(["waiting", "offered", "active"]);
const TYPING_SHOW_MS = 5000;
const TYPING_SEND_EVERY_MS = 2500;
const RETRY_RATE_LIMITED_MS = 2000;
const OUTBOX_KEY = "dayone.customer.outbox.";
const PHONE = window.matchMedia("(max-width: 760px)");

const END_REASONS = {
  mutual: (agent) => `You and ${agent || "the agent"} ended the chat.`,
  idle_closed: () => "The chat was closed after a period of silence.",
  expired: () => "This chat was interrupted too long ago to continue.",
  closed_by_lead: () => "The chat was closed by our support team.",
  cancelled: () => "You left the queue before an agent joined.",
};

const api = new Api({
  base: config.apiBase,
  onLoggedOut: () => showLogin("You have been logged out. Please log in again."),
});

let chat = null; // the open Chat, if any
const historyState = { items: new Map(), next: null, loading: false };

// ---------------------------------------------------------------------------------------------
// Small helpers

function show(element, visible) {
  element.hidden = !visible;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

function sameDay(a, b) {
  return a.toDateString() === b.toDateString();
}

function messageTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  return sameDay(date, now)
    ? timeFormat.format(date)
    : `${dayFormat.format(date)}, ${timeFormat.format(date)}`;
}

function listDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  if (sameDay(date, now)) return timeFormat.format(date);
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (sameDay(date, yesterday)) return "Yesterday";
  return dayFormat.format(date);
}

function initials(name) {
  const parts = (name || "").trim().split(/\s+/).filter(Boolean);
  if (!parts.length) return "";
  return (parts[0][0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
}

function agentName(session) {
  return (session && session.agent && session.agent.display_name) || "";
}

function topicOf(session) {
  return (session && session.topic) || "Chat with DayOne";
}

function statusLabel(session) {
  switch (session.status) {
    case "waiting":
    case "offered":
      return "Waiting";
    case "active":
      return "Active";
    case "incomplete":
      return "Interrupted";
    case "ended":
      return "Ended";
    default:
      return session.status || "";
  }
}

function positionText(position) {
  if (position === null || position === undefined) return "Finding you an agent…";
  if (position <= 1) return "You're next in line";
  return `You're number ${position} in line`;
}

function etaText(seconds) {
  if (seconds === null || seconds === undefined) {
    return "We'll connect you as soon as someone is free.";
  }
  if (seconds < 60) return "Estimated wait: less than a minute";
  const minutes = Math.round(seconds / 60);
  return `Estimated wait: about ${minutes} minute${minutes === 1 ? "" : "s"}`;
}

let toastTimer = null;
function toast(message) {
  const node = $("toast");
  node.textContent = message;
  show(node, true);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show(node, false), 5000);
}

function setLayout(pane) {
  const layout = $("app-view");
  layout.classList.toggle("show-history", pane === "history");
  layout.classList.toggle("show-main", pane !== "history");
}

// ---------------------------------------------------------------------------------------------
// One chat: its transcript, its socket, its outbox

class Chat {
  constructor(session) {
    this.id = session.id;
    this.session = session;
    this.messages = new Map(); // seq -> message object (deduped by seq)
    this.nodes = new Map(); // seq -> <li>
    this.contiguous = 0; // highest seq held with nothing missing below it
    this.maxSeq = 0; // highest seq held
    this.agentRead = 0; // the agent has read up to this seq
    this.readSent = 0;
    this.lastTypingSent = 0;
    this.typingTimer = null;
    this.gapAsked = 0;
    this.socket = null;
    this.closed = false;
    this.outbox = this._loadOutbox(); // client_msg_id -> {body, state, error}
    this.confirmingLeave = false;
  }

  // --- outbox: messages not yet confirmed by the server, kept across reloads of the tab ------

  _loadOutbox() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(OUTBOX_KEY + this.id)) || [];
      return new Map(saved.map((item) => [item.client_msg_id, { ...item, state: "queued" }]));
    } catch {
      return new Map();
    }
  }

  _saveOutbox() {
    const items = [...this.outbox].map(([id, item]) => ({ client_msg_id: id, body: item.body }));
    if (items.length) sessionStorage.setItem(OUTBOX_KEY + this.id, JSON.stringify(items));
    else sessionStorage.removeItem(OUTBOX_KEY + this.id);
  }

  // --- rendering --------------------------------------------------------------------------

  render() {
    const s = this.session;
    const live = LIVE.has(s.status);
    const waiting = s.status === "waiting" || s.status === "offered";
    const agent = agentName(s);

    $("chat-topic").textContent = topicOf(s);
    let status;
    if (waiting) status = "Waiting for an agent";
    else if (s.status === "active") status = agent ? `Chatting with ${agent}` : "Chatting";
    else if (s.status === "incomplete") status = "Interrupted";
    else if (s.status === "ended") status = agent ? `Ended · with ${agent}` : "Ended";
    else status = "Loading…";
    $("chat-status").textContent = status;
    const avatar = $("chat-avatar");
    avatar.textContent = agent ? initials(agent) : "";
    avatar.classList.toggle("empty", !agent);

    show($("waiting-card"), waiting);
    if (waiting) {
      $("waiting-position").textContent = positionText(s.position);
      $("waiting-eta").textContent = etaText(s.estimated_wait_s);
    }

    const endButton = $("end-button");
    show(endButton, live);
    endButton.textContent = waiting ? "Leave queue" : "End chat";
    endButton.disabled = s.end_requested_by === "customer";

    this.renderEnd();
    show($("composer"), live);
    show($("resume-bar"), s.status === "incomplete");
    if (s.status === "incomplete") {
      $("resume-text").textContent = s.resumable
        ? "This chat was interrupted. Pick it up where you left off."
        : "This chat was interrupted too long ago to continue.";
      show($("resume-button"), Boolean(s.resumable));
    }
    show($("ended-bar"), s.status === "ended");
    if (s.status === "ended") {
      const reason = END_REASONS[s.end_reason];
      $("ended-text").textContent = reason ? reason(agent) : "This chat has ended.";
    }
    if (!live) this.hideTyping();
  }

  renderEnd() {
    const s = this.session;
    const agent = agentName(s) || "The agent";
    const banner = $("end-banner");
    if ((s.status === "waiting" || s.status === "offered") && this.confirmingLeave) {
      $("end-text").textContent = "Leave the queue? You will lose your place.";
      $("end-confirm").textContent = "Leave queue";
      $("end-decline").textContent = "Stay";
      show($("end-confirm"), true);
      show($("end-decline"), true);
      show(banner, true);
    } else if (s.status === "active" && s.end_requested_by === "agent") {
      $("end-confirm").textContent = "End chat";
      $("end-decline").textContent = "Keep chatting";
      $("end-text").textContent = `${agent} would like to end the chat.`;
      show($("end-confirm"), true);
      show($("end-decline"), true);
      show(banner, true);
    } else if (s.status === "active" && s.end_requested_by === "customer") {
      $("end-text").textContent = `You asked to end the chat. Waiting for ${agent} to confirm…`;
      show($("end-confirm"), false);
      show($("end-decline"), false);
      show(banner, true);
    } else {
      show(banner, false);
    }
  }

  _messageNode(m) {
    const mine = m.sender === "customer";
    const li = el("li", `msg ${mine ? "mine" : m.sender === "system" ? "system" : "theirs"}`);
    li.dataset.seq = String(m.seq);
    li.dataset.sender = m.sender;
    const bubble = el("div", "bubble");
    bubble.appendChild(el("p", "body", m.body));
    li.appendChild(bubble);
    const meta = el("div", "meta");
    if (m.sender === "agent") meta.appendChild(el("span", "who", agentName(this.session)));
    const time = el("time", null, messageTime(m.created_at));
    if (m.created_at) time.dateTime = m.created_at;
    meta.appendChild(time);
    if (mine) meta.appendChild(el("span", "receipt"));
    li.appendChild(meta);
    return li;
  }

  _pendingNode(id, item) {
    const li = el("li", "msg mine pending");
    li.dataset.clientMsgId = id;
    const bubble = el("div", "bubble");
    bubble.appendChild(el("p", "body", item.body));
    li.appendChild(bubble);
    const meta = el("div", "meta");
    if (item.state === "failed") {
      meta.appendChild(el("span", "receipt failed", `Not sent: ${item.error || "please retry"}`));
      const retry = el("button", "link-button", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => {
        item.state = "queued";
        item.error = null;
        this.renderPending();
        this.flush();
      });
      meta.appendChild(retry);
    } else {
      const label = this.socket && this.socket.isOpen ? "Sending…" : "Waiting for connection…";
      meta.appendChild(el("span", "receipt", label));
    }
    li.appendChild(meta);
    return li;
  }

  renderPending() {
    const list = $("messages");
    for (const node of list.querySelectorAll("li.pending")) node.remove();
    for (const [id, item] of this.outbox) list.appendChild(this._pendingNode(id, item));
  }

  renderReceipts() {
    // One quiet receipt, under the customer's latest message: "Read" once the agent has read up
    // to it, "Sent" before that.
    let last = null;
    for (const node of $("messages").querySelectorAll("li.msg.mine:not(.pending)")) {
      const receipt = node.querySelector(".receipt");
      if (receipt) receipt.textContent = "";
      last = node;
    }
    if (last && LIVE.has(this.session.status)) {
      const seq = Number(last.dataset.seq);
      last.querySelector(".receipt").textContent = seq <= this.agentRead ? "Read" : "Sent";
    }
  }

  _nearBottom() {
    const scroller = $("scroller");
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }

  _scrollToBottom() {
    const scroller = $("scroller");
    scroller.scrollTop = scroller.scrollHeight;
  }

  // --- messages ---------------------------------------------------------------------------

  /** Adds one message (deduped by seq). ``batch`` skips the per-message scrolling and
   * receipts, for a transcript page that is rendered in one go. */
  addMessage(m, { local = false, batch = false } = {}) {
    if (!m || typeof m.seq !== "number") return;
    const known = this.messages.get(m.seq);
    if (known && !known.local) return; // a replay or a second copy: exactly once by seq
    const stick = !batch && (this._nearBottom() || m.sender === "customer");
    this.messages.set(m.seq, { ...m, local });
    if (m.client_msg_id && this.outbox.delete(m.client_msg_id)) {
      this._saveOutbox();
      const pending = $("messages").querySelector(
        `li.pending[data-client-msg-id="${CSS.escape(m.client_msg_id)}"]`,
      );
      if (pending) pending.remove();
    }
    const node = this._messageNode(m);
    const old = this.nodes.get(m.seq);
    if (old) {
      old.replaceWith(node);
    } else if (m.seq > this.maxSeq) {
      // The usual case: the newest message, placed before the unsent ones.
      $("messages").insertBefore(node, $("messages").querySelector("li.pending"));
    } else {
      // A late one (after a gap was filled): in seq order, before the first later message.
      let before = null;
      for (const candidate of $("messages").children) {
        if (candidate.classList.contains("pending") || Number(candidate.dataset.seq) > m.seq) {
          before = candidate;
          break;
        }
      }
      $("messages").insertBefore(node, before);
    }
    this.nodes.set(m.seq, node);
    this.maxSeq = Math.max(this.maxSeq, m.seq);
    while (this.messages.has(this.contiguous + 1)) this.contiguous += 1;
    if (m.seq > this.contiguous + 1 && this.gapAsked < m.seq) {
      // Something was missed (e.g. an event lost while the layer hiccupped): ask for it.
      this.gapAsked = m.seq;
      if (this.socket) this.socket.send({ type: "sync", after_seq: this.contiguous });
    }
    if (m.sender === "agent") {
      this.hideTyping();
      if (document.hidden) document.title = "• DayOne Support";
    }
    if (batch) return;
    this.renderReceipts();
    if (stick) this._scrollToBottom();
    if (!local) this.maybeSendRead();
  }

  async loadTranscript() {
    $("transcript-loading").hidden = false;
    try {
      let after = this.contiguous;
      for (;;) {
        const page = await api.messages(this.id, after, 200);
        if (this.closed) return;
        for (const m of page.results || []) this.addMessage(m, { batch: true });
        const next = page.next_after_seq;
        if (next === null || next === undefined || next <= after || !page.results.length) break;
        after = next;
      }
    } finally {
      if (!this.closed) $("transcript-loading").hidden = true;
    }
    this.renderPending();
    this.renderReceipts();
    this._scrollToBottom();
  }

  send(body) {
    const id = uuid4();
    this.outbox.set(id, { body, state: "queued", error: null });
    this._saveOutbox();
    this.renderPending();
    this._scrollToBottom();
    this.flush();
  }

  /** (Re)sends every unconfirmed message with its original client_msg_id. */
  flush() {
    if (!this.socket || !this.socket.isOpen) return;
    for (const [id, item] of this.outbox) {
      if (item.state === "failed") continue;
      if (this.socket.send({ type: "message.send", client_msg_id: id, body: item.body })) {
        item.state = "sent";
      }
    }
    this.renderPending();
  }

  ack(clientMsgId, seq) {
    const item = this.outbox.get(clientMsgId);
    if (!item || typeof seq !== "number") return;
    if (this.messages.has(seq)) {
      this.outbox.delete(clientMsgId);
      this._saveOutbox();
      this.renderPending();
      return;
    }
    // The message frame follows the ack; until it does, show the message as stored.
    this.addMessage(
      {
        seq,
        sender: "customer",
        body: item.body.trim(),
        created_at: new Date().toISOString(),
        client_msg_id: clientMsgId,
      },
      { local: true },
    );
  }

  maybeSendRead() {
    if (document.visibilityState !== "visible" || !this.socket || !this.socket.isOpen) return;
    let unread = false;
    for (const [seq, m] of this.messages) {
      if (m.sender !== "customer" && seq > this.readSent) {
        unread = true;
        break;
      }
    }
    if (unread && this.socket.send({ type: "read", seq: this.contiguous })) {
      this.readSent = this.contiguous;
    }
  }

  sendTyping() {
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    if (this.socket && this.socket.send({ type: "typing" })) this.lastTypingSent = now;
  }

  showTyping() {
    const agent = agentName(this.session) || "The agent";
    $("typing-text").textContent = `${agent} is typing…`;
    const stick = this._nearBottom();
    show($("typing"), true);
    if (stick) this._scrollToBottom();
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.hideTyping(), TYPING_SHOW_MS);
  }

  hideTyping() {
    clearTimeout(this.typingTimer);
    show($("typing"), false);
  }

  // --- the socket -------------------------------------------------------------------------

  connect() {
    if (this.socket || this.closed) return;
    this.socket = new ChatSocket({
      api,
      sessionId: this.id,
      wsBase: config.wsBase,
      afterSeq: () => this.contiguous,
      onFrame: (frame) => this.onFrame(frame),
      onStatus: (state, info) => this.onStatus(state, info),
    });
    this.socket.start();
  }

  disconnect() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.stop();
    }
    show($("conn-banner"), false);
  }

  close() {
    this.closed = true;
    this.disconnect();
    this.hideTyping();
  }

  onStatus(state, info = {}) {
    if (this.closed) return;
    const banner = $("conn-banner");
    if (state === "reconnecting") {
      $("conn-text").textContent = "Reconnecting…";
      show(banner, true);
    } else if (state === "open") {
      show(banner, false);
      this.gapAsked = 0;
      this.flush();
      this.maybeSendRead();
    } else if (state === "failed") {
      show(banner, false);
      this.socket = null;
      if (info.reason === "auth") api.logout();
      else refreshSession(this); // shows why: ended, interrupted, or gone
    } else if (state === "closed" || state === "connecting") {
      show(banner, false);
    }
    if (this.outbox.size) this.renderPending();
  }

  onFrame(frame) {
    if (this.closed || !frame || typeof frame.type !== "string") return;
    if (frame.session_id && frame.session_id !== this.id) return;
    switch (frame.type) {
      case "session.state":
        this.applySession(frame.session || frame);
        break;
      case "message": {
        const message = frame.message || frame;
        this.addMessage(message);
        const listed = historyState.items.get(this.id);
        if (listed && (!listed.last_message || listed.last_message.seq < message.seq)) {
          updateHistoryItem({ id: this.id, last_message: message, last_seq: message.seq });
        }
        break;
      }
      case "message.ack":
        this.ack(frame.client_msg_id, frame.seq);
        break;
      case "typing":
        if (frame.sender !== "customer") this.showTyping();
        break;
      case "read":
        if (frame.sender !== "customer" && typeof frame.seq === "number") {
          this.agentRead = Math.max(this.agentRead, frame.seq);
          this.renderReceipts();
        }
        break;
      case "end.requested":
        this.session = { ...this.session, end_requested_by: frame.by };
        this.render();
        break;
      case "end.declined":
        this.session = { ...this.session, end_requested_by: null };
        this.render();
        if (frame.by !== "customer") {
          toast(`${agentName(this.session) || "The agent"} would like to keep chatting.`);
        }
        break;
      case "session.ended":
        this.session = { ...this.session, status: "ended", end_reason: frame.reason || null };
        this.finish();
        break;
      case "error":
        this.onError(frame);
        break;
      default:
        // Extra frame types are allowed by the contract; this page does not need them.
        break;
    }
  }

  onError(frame) {
    const item = frame.client_msg_id && this.outbox.get(frame.client_msg_id);
    if (item) {
      if (/rate|fast|throttl/.test(frame.code || "")) {
        item.state = "queued";
        setTimeout(() => this.flush(), RETRY_RATE_LIMITED_MS);
      } else {
        item.state = "failed";
        item.error = frame.detail;
      }
      this.renderPending();
      return;
    }
    if (frame.detail) toast(frame.detail);
  }

  applySession(session) {
    if (!session || session.id !== this.id) return;
    this.session = session;
    updateHistoryItem(session);
    if (session.status === "ended") {
      this.finish();
      return;
    }
    if (session.status === "incomplete") {
      // Unsent messages of a resumable chat go out after "Resume chat".
      if (!session.resumable) this.dropOutbox();
      this.disconnect();
    }
    this.render();
  }

  /** Unsent messages of a chat that is no longer live can never be sent: say so, once. */
  dropOutbox() {
    if (!this.outbox.size) return;
    this.outbox.clear();
    this._saveOutbox();
    this.renderPending();
    toast("A message could not be sent before the chat stopped.");
  }

  finish() {
    this.dropOutbox();
    this.disconnect();
    this.hideTyping();
    this.render();
    this.renderReceipts();
    updateHistoryItem(this.session);
    loadHistory({ reset: true });
  }

  // --- the customer's actions -------------------------------------------------------------

  async requestEnd({ confirmed = false } = {}) {
    const s = this.session;
    if ((s.status === "waiting" || s.status === "offered") && !confirmed) {
      // Leaving the queue cannot be undone, so the page asks first.
      this.confirmingLeave = true;
      this.render();
      return;
    }
    this.confirmingLeave = false;
    if (this.socket && this.socket.send({ type: "end.request" })) {
      if (s.status === "active") {
        this.session = { ...s, end_requested_by: "customer" };
        this.render();
      }
      return;
    }
    try {
      this.applySession(await api.request("POST", `sessions/${encodeURIComponent(this.id)}/end`));
    } catch (error) {
      toast(error.message);
    }
  }

  answerEnd(confirm) {
    if (this.confirmingLeave) {
      if (confirm) {
        this.requestEnd({ confirmed: true });
      } else {
        this.confirmingLeave = false;
        this.render();
      }
      return;
    }
    const type = confirm ? "end.confirm" : "end.decline";
    if (this.socket && this.socket.send({ type })) {
      if (!confirm) {
        this.session = { ...this.session, end_requested_by: null };
        this.render();
      }
      return;
    }
    if (confirm) {
      api
        .request("POST", `sessions/${encodeURIComponent(this.id)}/end`)
        .then((s) => this.applySession(s))
        .catch((error) => toast(error.message));
    } else {
      toast("You're offline right now; please try again in a moment.");
    }
  }

  async resume() {
    const button = $("resume-button");
    button.disabled = true;
    try {
      const session = await api.resume(this.id);
      if (this.closed) return;
      this.applySession(session);
      if (LIVE.has(session.status)) this.connect();
      loadHistory({ reset: true });
    } catch (error) {
      toast(error.message);
      refreshSession(this);
    } finally {
      button.disabled = false;
    }
  }
}

async function refreshSession(target) {
  try {
    const session = await api.getSession(target.id);
    if (chat === target) target.applySession(session);
  } catch (error) {
    if (chat === target && error.status !== 401) toast("This chat is not available right now.");
  }
}

// ---------------------------------------------------------------------------------------------
// Views

function showLogin(message) {
  if (chat) {
    chat.close();
    chat = null;
  }
  show($("boot"), false);
  show($("app-view"), false);
  show($("account"), false);
  show($("login-view"), true);
  const error = $("login-error");
  error.textContent = message || "";
  show(error, Boolean(message));
  $("login-username").focus();
}

async function showApp() {
  show($("boot"), false);
  show($("login-view"), false);
  show($("app-view"), true);
  show($("account"), true);
  $("account-name").textContent = api.username;
  $("history-hint").textContent = `The last ${config.historyDays} days`;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("chat");
  const items = await loadHistory({ reset: true });
  if (wanted) {
    openSession(wanted);
    return;
  }
  const live = (items || []).find((s) => LIVE.has(s.status));
  if (live) openSession(live.id, live);
  else showStart();
}

function showStart() {
  if (chat) {
    chat.close();
    chat = null;
  }
  history.replaceState(null, "", location.pathname);
  markCurrent(null);
  show($("chat-view"), false);
  show($("start-view"), true);
  show($("start-error"), false);
  setLayout("main");
  if (!PHONE.matches) $("topic-input").focus();
}

async function openSession(id, known) {
  if (chat) chat.close();
  const current = new Chat(known || { id, status: "" });
  chat = current;
  history.replaceState(null, "", `#chat=${encodeURIComponent(id)}`);
  markCurrent(id);
  $("messages").replaceChildren();
  show($("start-view"), false);
  show($("chat-view"), true);
  setLayout("main");
  try {
    current.render();
    const session = known || (await api.getSession(id));
    if (chat !== current) return;
    current.session = session;
    current.render();
    await current.loadTranscript();
    if (chat !== current) return;
    const { status, resumable } = current.session;
    if (status === "ended" || (status === "incomplete" && !resumable)) current.dropOutbox();
    if (LIVE.has(current.session.status)) {
      current.connect();
      if (!PHONE.matches) $("composer-input").focus();
    }
  } catch (error) {
    if (chat !== current) return;
    if (error.status === 404) {
      toast("That chat is not available.");
      showStart();
    } else if (error.status !== 401) {
      toast(error.message);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// History: the chats of the last HISTORY_DAYS days, newest first, paged with "next"

function historyNode(session) {
  const li = el("li");
  const button = el("button", "history-item");
  button.type = "button";
  button.dataset.sessionId = session.id;
  const top = el("span", "history-top");
  top.appendChild(el("span", "history-topic", topicOf(session)));
  top.appendChild(el("span", "history-date", listDate(session.created_at)));
  button.appendChild(top);
  const bottom = el("span", "history-bottom");
  const last = session.last_message;
  let preview = "No messages";
  if (last) preview = `${last.sender === "customer" ? "You: " : ""}${last.body}`;
  else if (agentName(session)) preview = `With ${agentName(session)}`;
  else if (LIVE.has(session.status)) preview = "Waiting for an agent";
  bottom.appendChild(el("span", "history-preview", preview));
  bottom.appendChild(el("span", `badge badge-${session.status}`, statusLabel(session)));
  button.appendChild(bottom);
  button.addEventListener("click", () => openSession(session.id));
  li.appendChild(button);
  if (chat && chat.id === session.id) button.classList.add("current");
  return li;
}

function renderHistory() {
  const list = $("history-list");
  list.replaceChildren(...[...historyState.items.values()].map(historyNode));
  show($("history-empty"), historyState.items.size === 0);
  show($("history-more"), Boolean(historyState.next));
}

function updateHistoryItem(session) {
  if (!historyState.items.has(session.id)) return;
  const known = historyState.items.get(session.id);
  historyState.items.set(session.id, { ...known, ...session });
  renderHistory();
}

function markCurrent(id) {
  for (const button of $("history-list").querySelectorAll(".history-item")) {
    button.classList.toggle("current", button.dataset.sessionId === id);
  }
}

async function loadHistory({ reset = false } = {}) {
  if (historyState.loading && !reset) return null;
  historyState.loading = true;
  show($("history-error"), false);
  try {
    const page = await api.listSessions(reset ? null : historyState.next);
    if (reset) historyState.items = new Map();
    for (const session of page.results || []) historyState.items.set(session.id, session);
    historyState.next = page.next || null;
    renderHistory();
    return page.results || [];
  } catch (error) {
    if (error.status !== 401) {
      $("history-error").textContent = error.message;
      show($("history-error"), true);
    }
    return null;
  } finally {
    historyState.loading = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = $("login-username").value.trim();
    const password = $("login-password").value;
    const error = $("login-error");
    if (!username || !password) {
      error.textContent = "Please enter your username and password.";
      show(error, true);
      return;
    }
    $("login-submit").disabled = true;
    try {
      await api.login(username, password);
      $("login-password").value = "";
      await showApp();
    } catch (failure) {
      error.textContent =
        failure.status === 401 || failure.status === 400
          ? "That username and password do not match."
          : failure.message;
      show(error, true);
    } finally {
      $("login-submit").disabled = false;
    }
  });

  $("logout-button").addEventListener("click", () => {
    if (chat) {
      chat.close();
      chat = null;
    }
    history.replaceState(null, "", location.pathname);
    // Logging out on purpose forgets this tab's unsent messages too.
    for (const key of Object.keys(sessionStorage)) {
      if (key.startsWith(OUTBOX_KEY)) sessionStorage.removeItem(key);
    }
    api.logout();
  });

  $("new-chat-button").addEventListener("click", () => {
    const live = [...historyState.items.values()].find((s) => LIVE.has(s.status));
    if (live) {
      toast("You already have a chat open; here it is.");
      openSession(live.id);
    } else {
      showStart();
    }
  });
  $("ended-new-chat").addEventListener("click", showStart);
  $("history-more").addEventListener("click", () => loadHistory());
  $("chat-back").addEventListener("click", () => setLayout("history"));
  $("start-back").addEventListener("click", () => setLayout("history"));

  for (const chip of $("topic-chips").querySelectorAll(".chip")) {
    chip.addEventListener("click", () => {
      $("topic-input").value = chip.dataset.topic;
      $("topic-input").focus();
    });
  }

  $("start-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("start-button");
    button.disabled = true;
    show($("start-error"), false);
    try {
      const session = await api.createSession($("topic-input").value.trim());
      $("topic-input").value = "";
      loadHistory({ reset: true });
      openSession(session.id, session);
    } catch (error) {
      if (error.code === "live_session_exists" && error.body.session_id) {
        toast("You already have a chat open; here it is.");
        openSession(error.body.session_id);
      } else if (error.status !== 401) {
        $("start-error").textContent = error.message;
        show($("start-error"), true);
      }
    } finally {
      button.disabled = false;
    }
  });

  const input = $("composer-input");
  const count = $("composer-count");
  const autosize = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  };
  const updateCount = () => {
    const length = input.value.length;
    const near = length > config.maxMessageChars * 0.8;
    count.textContent = `${length} / ${config.maxMessageChars}`;
    count.classList.toggle("over", length > config.maxMessageChars);
    show(count, near);
  };
  const submit = () => {
    const body = input.value;
    if (!chat || !body.trim()) return;
    if (body.length > config.maxMessageChars) {
      toast(`A message can be at most ${config.maxMessageChars} characters.`);
      return;
    }
    chat.send(body);
    input.value = "";
    autosize();
    updateCount();
  };
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    updateCount();
    if (chat && input.value.trim()) chat.sendTyping();
  });

  $("end-button").addEventListener("click", () => chat && chat.requestEnd());
  $("end-confirm").addEventListener("click", () => chat && chat.answerEnd(true));
  $("end-decline").addEventListener("click", () => chat && chat.answerEnd(false));
  $("resume-button").addEventListener("click", () => chat && chat.resume());

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      document.title = "DayOne Support";
      if (chat) {
        chat.maybeSendRead();
        // A phone that slept may be deep in its backoff: try at once when the page is back.
        if (chat.socket) chat.socket.retryNow();
      }
    }
  });
}

wire();
if (api.loggedIn) {
  showApp().catch(() => showLogin());
} else {
  showLogin();
}

