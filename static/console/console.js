/* DayOne agent console: plain JavaScript, no build step.
 *
 * One WebSocket (/ws/agent/, authenticated by the session cookie) carries the agent's status,
 * offers and every chat. Text from the network is only ever put in the page with textContent.
 * When the socket drops, it reconnects with exponential backoff and jitter, asks each chat for
 * what it missed (sync after_seq) and shows every message once (messages are keyed by seq).
 */
(() => {
  "use strict";

  const CONFIG = JSON.parse(document.getElementById("console-config").textContent);
  // Offer deadlines are server times. Each estimate of (server clock - our clock) below comes
  // a little late (the page or frame took time to arrive), so each is a lower bound: keep the
  // largest. It errs towards showing slightly less time than there is, never more.
  let clockOffsetMs = CONFIG.server_now_ms - Date.now();
  const serverNow = () => Date.now() + clockOffsetMs;

  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const CONNECT_TIMEOUT_MS = 10000;
  const ACK_TIMEOUT_MS = 10000;
  const TYPING_SEND_EVERY_MS = 2500;
  const TYPING_SHOW_MS = 5000;
  const QUEUE_POLL_MS = 5000;
  const FATE_CHECK_DELAY_MS = 1500;

  const STATUS_LABELS = {
    offline: "Offline",
    available: "Available",
    break_pending: "Break after current chats",
    on_break: "On break",
    away: "Away: you missed an offer",
  };
  const END_REASONS = {
    mutual: "The chat ended by mutual agreement.",
    idle_closed: "The chat was closed after the customer went quiet.",
    expired: "The chat expired.",
    closed_by_lead: "A support lead closed this chat.",
    cancelled: "The customer left before the chat started.",
  };
  const LIVE = new Set(["offered", "active"]);

  // ---------------------------------------------------------------- small helpers

  /** Build an element. Strings among the children become text nodes: never parsed as HTML. */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const q = (root, selector) => root.querySelector(selector);
  const show = (node, visible) => { node.hidden = !visible; };

  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
  function fmtTime(iso) {
    const d = iso ? new Date(iso) : null;
    return d && !Number.isNaN(d.getTime()) ? timeFmt.format(d) : "";
  }
  function fmtDate(iso) {
    const d = iso ? new Date(iso) : null;
    return d && !Number.isNaN(d.getTime()) ? dateFmt.format(d) : "–";
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    const m = Math.floor(s / 60);
    if (m >= 60) return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
    return `${m}:${String(s % 60).padStart(2, "0")}`;
  }
  function fmtMoney(cents, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD" })
        .format(cents / 100);
    } catch (_e) {
      return `${(cents / 100).toFixed(2)} ${currency || ""}`.trim();
    }
  }

  // ---------------------------------------------------------------- the socket

  /** One WebSocket that keeps coming back: exponential backoff with jitter, capped. */
  class Socket {
    constructor({ url, onFrame, onState }) {
      this.url = url;
      this.onFrame = onFrame;
      this.onState = onState;
      this.ws = null;
      this.attempt = 0;
      this.generation = 0;
      this.retryTimer = null;
      this.retryAt = 0;
      this.stopped = false;
      window.addEventListener("online", () => this.reconnectNow());
    }

    get isOpen() {
      return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
    }

    connect() {
      if (this.stopped) return;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.onState("connecting");
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (_e) {
        this.scheduleRetry();
        return;
      }
      this.ws = ws;
      const connectTimer = setTimeout(() => {
        if (ws.readyState === WebSocket.CONNECTING) ws.close();
      }, CONNECT_TIMEOUT_MS);
      ws.addEventListener("open", () => {
        clearTimeout(connectTimer);
        if (this.ws !== ws) return;
        this.attempt = 0;
        this.generation += 1;
        this.onState("open");
      });
      ws.addEventListener("message", (event) => {
        if (this.ws !== ws) return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (_e) {
          return;
        }
        if (frame && typeof frame.type === "string") this.onFrame(frame);
      });
      ws.addEventListener("close", (event) => {
        clearTimeout(connectTimer);
        if (this.ws !== ws) return;
        this.ws = null;
        if (event.code === 4401 || event.code === 4403) {
          this.stopped = true;
          this.onState(event.code === 4401 ? "unauthenticated" : "forbidden");
          return;
        }
        this.scheduleRetry();
      });
    }

    scheduleRetry() {
      if (this.stopped || this.retryTimer) return;
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
      // "Equal jitter": never zero, and consoles cut off together do not come back together.
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.attempt += 1;
      this.retryAt = Date.now() + delay;
      this.onState("retrying");
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.connect();
      }, delay);
    }

    reconnectNow() {
      if (this.retryTimer) {
        clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.connect();
      }
    }

    send(frame) {
      if (!this.isOpen) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }

    /** Cut the connection as a network failure would (used by tests and the "Reconnect" link). */
    drop() {
      if (this.ws) this.ws.close();
    }
  }

  // ---------------------------------------------------------------- state

  const app = {
    agent: null, // the last agent.state frame
    chats: new Map(), // session_id -> chat
    slots: [], // one per seat: { node, empty, chatId }
    selectedId: null,
    socketState: "connecting",
    fateTimer: null,
  };

  const dom = {
    seats: document.getElementById("seats"),
    pill: document.getElementById("status-pill"),
    statusLabel: document.getElementById("status-label"),
    statusSince: document.getElementById("status-since"),
    btnStart: document.getElementById("btn-shift-start"),
    btnBreak: document.getElementById("btn-break-request"),
    btnBack: document.getElementById("btn-break-end"),
    btnEnd: document.getElementById("btn-shift-end"),
    queue: document.getElementById("queue"),
    queueWaiting: document.getElementById("queue-waiting"),
    queueLongest: document.getElementById("queue-longest"),
    conn: document.getElementById("conn"),
    connLabel: document.getElementById("conn-label"),
    banner: document.getElementById("banner"),
    panelTitle: document.getElementById("panel-title"),
    panelSub: document.getElementById("panel-sub"),
    panelTabs: document.getElementById("panel-tabs"),
    panelBody: document.getElementById("panel-body"),
    panelFoot: document.getElementById("panel-foot"),
    panelRefresh: document.getElementById("panel-refresh"),
    paneTemplate: document.getElementById("pane-template"),
  };

  const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${CONFIG.ws_path}`;
  const socket = new Socket({ url: wsUrl, onFrame: handleFrame, onState: onSocketState });

  // ---------------------------------------------------------------- banner

  let bannerTimer = null;
  function banner(text, kind = "warn", ms = 0, extra = null) {
    clearTimeout(bannerTimer);
    dom.banner.replaceChildren(text, extra || "");
    dom.banner.dataset.kind = kind;
    show(dom.banner, true);
    if (ms) bannerTimer = setTimeout(clearBanner, ms);
  }
  function clearBanner() {
    clearTimeout(bannerTimer);
    show(dom.banner, false);
    dom.banner.replaceChildren();
  }

  // ---------------------------------------------------------------- connection state

  let retryTicker = null;
  function onSocketState(state) {
    app.socketState = state;
    dom.conn.dataset.state = state === "unauthenticated" || state === "forbidden" ? "closed" : state;
    clearInterval(retryTicker);
    if (state === "open") {
      dom.connLabel.textContent = "Connected";
      if (dom.banner.dataset.kind === "conn") clearBanner();
    } else if (state === "connecting") {
      dom.connLabel.textContent = "Connecting…";
    } else if (state === "retrying") {
      const tick = () => {
        const s = Math.max(0, Math.ceil((socket.retryAt - Date.now()) / 1000));
        dom.connLabel.textContent = s > 0 ? `Reconnecting in ${s} s` : "Reconnecting…";
      };
      tick();
      retryTicker = setInterval(tick, 500);
      const now = h("button", {
        type: "button", className: "link-button", text: "Reconnect now",
        onclick: () => socket.reconnectNow(),
      });
      banner("Connection lost. Reconnecting… Replies you write now are sent when it is back. ",
        "conn", 0, now);
      dom.banner.dataset.kind = "conn";
    } else if (state === "unauthenticated") {
      dom.connLabel.textContent = "Logged out";
      const login = h("a", { href: `/admin/login/?next=${encodeURIComponent(location.pathname)}`, text: "Log in again" });
      banner("Your login has expired. ", "error", 0, login);
    } else if (state === "forbidden") {
      dom.connLabel.textContent = "Refused";
      banner("The server refused this page's connection (wrong address?). Reload the page.", "error");
    }
    renderControls();
    for (const chat of app.chats.values()) renderChat(chat);
  }

  // ---------------------------------------------------------------- frames

  function handleFrame(frame) {
    const chat = frame.session_id ? app.chats.get(frame.session_id) : null;
    switch (frame.type) {
      case "agent.state":
        return onAgentState(frame);
      case "session.state":
        return onSessionState(frame);
      case "offer":
        return onOffer(frame);
      case "offer.expired":
        return onOfferExpired(frame);
      case "message":
        if (chat) addMessage(chat, frame.message || frame);
        return;
      case "message.ack":
        if (chat) onAck(chat, frame);
        return;
      case "typing":
        if (chat && frame.sender === "customer") showTyping(chat);
        return;
      case "read":
        if (chat && frame.sender === "customer") onRead(chat, frame.seq);
        return;
      case "end.requested":
        if (chat) {
          chat.endRequestedBy = frame.by;
          renderChat(chat);
        }
        return;
      case "end.declined":
        if (chat) {
          const byCustomer = chat.endRequestedBy === "agent";
          chat.endRequestedBy = null;
          if (byCustomer) systemNote(chat, "The customer would like to keep chatting.");
          renderChat(chat);
        }
        return;
      case "session.ended":
        if (chat) endChat(chat, frame.reason);
        return;
      case "error":
        return onError(frame, chat);
      default:
        return undefined; // unknown types are allowed by the protocol: ignore them
    }
  }

  function onSessionState(frame) {
    const session = frame.session || frame;
    const id = frame.session_id || session.id;
    if (!id) return;
    const known = app.chats.get(id);
    if (!known && !LIVE.has(session.status)) return; // not one of ours (any more)
    if (known && LIVE.has(known.status) && session.status === "waiting") {
      if (known.declined) {
        forgetChat(known); // we declined it: it went back to its place in the queue
      } else {
        // Either it really went back to the queue, or this is an older state that overtook a
        // newer one on the way (states are built after their commits, in separate processes).
        // The server's answer settles it.
        verifyChat(known);
      }
      return;
    }
    applySession(known || ensureChat(id), session);
  }

  function onAgentState(state) {
    const first = app.agent === null;
    app.agent = state;
    for (const seat of state.seats || []) {
      if (seat.session_id) ensureChat(seat.session_id);
    }
    layout();
    renderControls();
    renderQueueFromAgentState();
    if (first) clearBanner();
    // A chat we still think is live but that holds no seat any more ended while we were not
    // looking (or its end event is on its way). Ask the server after a moment.
    clearTimeout(app.fateTimer);
    app.fateTimer = setTimeout(checkFates, FATE_CHECK_DELAY_MS);
  }

  function seatedIds() {
    return new Set((app.agent?.seats || []).map((s) => s.session_id).filter(Boolean));
  }

  function checkFates() {
    const seated = seatedIds();
    for (const chat of app.chats.values()) {
      if (LIVE.has(chat.status) && !seated.has(chat.id)) verifyChat(chat);
    }
  }

  /** Ask the server what became of a chat whose events we may have missed or got out of order. */
  async function verifyChat(chat) {
    if (chat.verifying) return;
    chat.verifying = true;
    let status = 0;
    let session = null;
    try {
      const response = await fetch(`/api/sessions/${encodeURIComponent(chat.id)}`, {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      status = response.status;
      if (response.ok) session = await response.json();
    } catch (_e) {
      status = 0;
    } finally {
      chat.verifying = false;
    }
    if (app.chats.get(chat.id) !== chat) return;
    // The server answers an agent only about sessions assigned to them: a live one is still ours.
    const stillOurs = session && LIVE.has(session.status);
    if (stillOurs || (session && session.status !== "waiting")) {
      applySession(chat, session); // still ours, or ended / incomplete
    } else if (session || status === 404) {
      // Back in the queue or another agent's: an offer simply goes away, a chat says so.
      if (chat.status === "offered") {
        forgetChat(chat);
        return;
      }
      chat.status = session?.status === "waiting" ? "waiting" : "gone";
      chat.offer = null;
      renderChat(chat);
      renderControls();
      if (app.selectedId === chat.id) renderPanel();
    }
    // Anything else (network trouble): the next agent.state or reconnect checks again.
  }

  // ---------------------------------------------------------------- chats

  function ensureChat(id) {
    let chat = app.chats.get(id);
    if (chat) return chat;
    const node = dom.paneTemplate.content.firstElementChild.cloneNode(true);
    chat = {
      id,
      node,
      status: "unknown",
      customerName: "",
      topic: "",
      messages: new Map(), // seq -> message
      lastSeq: 0, // every message up to here is shown
      pending: new Map(), // client_msg_id -> { body, li, state, timer }
      readByCustomer: 0,
      readSent: 0,
      offer: null, // { expiresAt, totalMs, accepting }
      endRequestedBy: null,
      endReason: null,
      customerConnected: true,
      syncedGeneration: 0,
      gapAsked: 0,
      declined: false,
      verifying: false,
      typingTimer: null,
      lastTypingSent: 0,
    };
    bindPane(chat);
    app.chats.set(id, chat);
    return chat;
  }

  function bindPane(chat) {
    const node = chat.node;
    node.dataset.sessionId = chat.id;
    node.dataset.state = "loading";
    q(node, ".pane-head").addEventListener("click", (e) => {
      if (!e.target.closest("button")) select(chat.id);
    });
    node.addEventListener("focusin", () => select(chat.id));
    q(node, ".act-accept").addEventListener("click", () => {
      if (socket.send({ type: "offer.accept", session_id: chat.id })) {
        chat.offer = { ...(chat.offer || {}), accepting: true };
        renderChat(chat);
      }
    });
    q(node, ".act-decline").addEventListener("click", () => {
      if (socket.send({ type: "offer.decline", session_id: chat.id })) {
        chat.declined = true;
        forgetChat(chat);
      }
    });
    q(node, ".act-end").addEventListener("click", () => {
      const type = chat.endRequestedBy === "customer" ? "end.confirm" : "end.request";
      if (socket.send({ type, session_id: chat.id }) && type === "end.request") {
        chat.endRequestedBy = "agent";
        renderChat(chat);
      }
    });
    q(node, ".act-confirm").addEventListener("click", () => {
      socket.send({ type: "end.confirm", session_id: chat.id });
    });
    q(node, ".act-keep").addEventListener("click", () => {
      if (socket.send({ type: "end.decline", session_id: chat.id })) {
        chat.endRequestedBy = null;
        systemNote(chat, "You chose to keep chatting.");
        renderChat(chat);
      }
    });
    q(node, ".act-close").addEventListener("click", () => closeChat(chat));

    const form = q(node, ".composer");
    const input = q(node, ".composer-input");
    input.maxLength = CONFIG.max_message_chars;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      submitComposer(chat);
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submitComposer(chat);
      }
    });
    input.addEventListener("input", () => {
      renderCount(chat);
      const now = Date.now();
      if (input.value.trim() && now - chat.lastTypingSent > TYPING_SEND_EVERY_MS) {
        chat.lastTypingSent = now;
        socket.send({ type: "typing", session_id: chat.id });
      }
    });
    q(node, ".transcript").addEventListener("scroll", () => maybeSendRead(chat));
  }

  function applySession(chat, session) {
    const before = chat.status;
    chat.status = session.status;
    if (session.customer?.display_name) chat.customerName = session.customer.display_name;
    if (session.topic !== undefined) chat.topic = session.topic || "";
    chat.customerConnected = session.customer_connected !== false;
    chat.endRequestedBy = session.end_requested_by || null;
    if (session.status === "offered") {
      if (!chat.offer) {
        const expires = session.offer_expires_at ? Date.parse(session.offer_expires_at) : null;
        chat.offer = { expiresAt: expires, totalMs: CONFIG.offer_timeout_s * 1000 };
      }
    } else {
      chat.offer = null;
    }
    if (session.status === "ended") chat.endReason = session.end_reason || chat.endReason;
    if (session.status === "active" && before !== "active" && !app.selectedId) select(chat.id);
    if (session.status === "active" && before === "offered") {
      // Straight to the reply box, unless the agent is busy typing somewhere else.
      setTimeout(() => {
        const current = document.activeElement;
        if (!current || current === document.body || chat.node.contains(current)) {
          q(chat.node, ".composer-input").focus();
        }
      }, 0);
    }
    // Each chat catches up once per connection, when it becomes active, and whenever the state
    // names a message it does not show yet: everything after the last seq it shows.
    const behind = typeof session.last_seq === "number" && session.last_seq > chat.lastSeq;
    const newConnection = chat.syncedGeneration !== socket.generation;
    const justAccepted = chat.status === "active" && before !== "active";
    if (LIVE.has(chat.status) && (newConnection || justAccepted || behind)) {
      if (socket.send({ type: "sync", session_id: chat.id, after_seq: chat.lastSeq })) {
        chat.syncedGeneration = socket.generation;
        if (newConnection || justAccepted) resendPending(chat);
      }
    }
    layout();
    renderChat(chat);
    renderControls();
    if (app.selectedId === chat.id && LIVE.has(before) !== LIVE.has(chat.status)) renderPanel();
  }

  function onOffer(frame) {
    const chat = ensureChat(frame.session_id);
    chat.status = "offered";
    chat.customerName = frame.customer?.display_name || chat.customerName;
    chat.topic = frame.topic || "";
    const expiresAt = frame.expires_at ? Date.parse(frame.expires_at) : null;
    const totalMs = CONFIG.offer_timeout_s * 1000;
    if (expiresAt) {
      // The offer was made (server time) OFFER_TIMEOUT_S before it expires: just now.
      clockOffsetMs = Math.max(clockOffsetMs, expiresAt - totalMs - Date.now());
    }
    chat.offer = { expiresAt, totalMs };
    layout();
    renderChat(chat);
    renderControls();
    tickOffers();
  }

  function onOfferExpired(frame) {
    const chat = app.chats.get(frame.session_id);
    if (!chat) return;
    forgetChat(chat);
    banner("An offer timed out and went to the next agent.", "info", 8000);
  }

  function endChat(chat, reason) {
    chat.status = "ended";
    chat.endReason = reason || chat.endReason;
    chat.endRequestedBy = null;
    chat.offer = null;
    hideTyping(chat);
    renderChat(chat);
    renderControls();
    if (app.selectedId === chat.id) renderPanel();
  }

  function closeChat(chat) {
    if (LIVE.has(chat.status)) return;
    forgetChat(chat);
  }

  function forgetChat(chat) {
    for (const p of chat.pending.values()) clearTimeout(p.timer);
    clearTimeout(chat.typingTimer);
    chat.node.remove();
    app.chats.delete(chat.id);
    for (const key of [...panel.cache.keys()]) {
      if (key.startsWith(`${chat.id}/`)) panel.cache.delete(key);
    }
    if (app.selectedId === chat.id) {
      app.selectedId = null;
      const next = [...app.chats.values()].find((c) => LIVE.has(c.status));
      if (next) select(next.id);
      else renderPanel();
    }
    layout();
    renderControls();
  }

  // ---------------------------------------------------------------- messages

  function messageItem(m) {
    const li = h("li", { className: `msg ${m.sender}`, dataset: { seq: String(m.seq) } });
    li.append(h("div", { className: "bubble", text: m.body }));
    const meta = h("div", { className: "meta" }, h("time", { datetime: m.created_at, text: fmtTime(m.created_at) }));
    if (m.sender === "agent") {
      meta.append(h("span", { className: "receipt", dataset: { read: "false" }, text: "Sent" }));
    }
    if (m.sender !== "system") li.append(meta);
    return li;
  }

  function nearBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function addMessage(chat, m) {
    if (!m || typeof m.seq !== "number" || chat.messages.has(m.seq)) return; // exactly once
    const list = q(chat.node, ".transcript");
    const stick = nearBottom(list) || m.sender === "agent";
    if (m.client_msg_id && chat.pending.has(m.client_msg_id)) {
      const p = chat.pending.get(m.client_msg_id);
      clearTimeout(p.timer);
      p.li.remove();
      chat.pending.delete(m.client_msg_id);
    }
    chat.messages.set(m.seq, m);
    const li = messageItem(m);
    // Keep seq order even when a resync fills a gap behind newer messages.
    let before = null;
    for (const other of list.children) {
      const seq = Number(other.dataset.seq);
      if (other.classList.contains("pending") || (other.dataset.seq && seq > m.seq)) {
        before = other;
        break;
      }
    }
    list.insertBefore(li, before);
    while (chat.messages.has(chat.lastSeq + 1)) chat.lastSeq += 1;
    if (m.seq > chat.lastSeq + 1 && chat.gapAsked < m.seq) {
      // A hole (a live event overtook the replay): ask for what is missing, once per hole.
      chat.gapAsked = m.seq;
      socket.send({ type: "sync", session_id: chat.id, after_seq: chat.lastSeq });
    }
    if (m.sender === "customer") hideTyping(chat);
    renderReceipts(chat);
    if (stick) list.scrollTop = list.scrollHeight;
    maybeSendRead(chat);
    if (m.sender === "customer" && !document.hasFocus()) bumpUnread();
  }

  function systemNote(chat, text) {
    const list = q(chat.node, ".transcript");
    const li = h("li", { className: "msg system local" }, h("div", { className: "bubble", text }));
    const pending = list.querySelector(".pending");
    list.insertBefore(li, pending);
    list.scrollTop = list.scrollHeight;
  }

  function submitComposer(chat) {
    const input = q(chat.node, ".composer-input");
    const body = input.value.trim();
    if (!body || chat.status !== "active") return;
    if (body.length > CONFIG.max_message_chars) {
      renderCount(chat);
      return;
    }
    input.value = "";
    renderCount(chat);
    sendMessage(chat, body);
  }

  function sendMessage(chat, body, existingId = null) {
    const id = existingId || newId();
    let p = chat.pending.get(id);
    if (!p) {
      const li = h("li", { className: "msg agent pending" },
        h("div", { className: "bubble", text: body }),
        h("div", { className: "meta" }, h("span", { className: "state" })));
      p = { body, li, state: "sending", timer: null };
      chat.pending.set(id, p);
      const list = q(chat.node, ".transcript");
      list.append(li);
      list.scrollTop = list.scrollHeight;
    }
    transmit(chat, id, p);
  }

  function transmit(chat, id, p) {
    clearTimeout(p.timer);
    // The same client_msg_id on every retry: the server stores the message once.
    const sent = socket.send({ type: "message.send", session_id: chat.id, client_msg_id: id, body: p.body });
    p.state = sent ? "sending" : "queued";
    if (sent) {
      p.timer = setTimeout(() => {
        if (chat.pending.get(id) === p) {
          p.state = "failed";
          p.detail = "No answer from the server.";
          renderPending(chat, id, p);
        }
      }, ACK_TIMEOUT_MS);
    }
    renderPending(chat, id, p);
  }

  function resendPending(chat) {
    for (const [id, p] of chat.pending) transmit(chat, id, p);
  }

  function renderPending(chat, id, p) {
    const li = p.li;
    li.classList.toggle("failed", p.state === "failed");
    const meta = q(li, ".meta");
    const label = { sending: "Sending…", queued: "Waiting for the connection…", failed: `Not sent. ${p.detail || ""}` }[p.state];
    meta.replaceChildren(h("span", { className: "state", text: label }));
    if (p.state === "failed") {
      meta.append(h("button", {
        type: "button", className: "link-button retry", text: "Retry",
        onclick: () => transmit(chat, id, p),
      }));
    }
  }

  function onAck(chat, frame) {
    const p = chat.pending.get(frame.client_msg_id);
    if (!p) return;
    clearTimeout(p.timer);
    p.state = "sending";
    // The message frame itself follows (or came first and already replaced the pending item).
    q(p.li, ".meta").replaceChildren(h("span", { className: "state", text: "Sent" }));
  }

  function onRead(chat, seq) {
    if (typeof seq === "number" && seq > chat.readByCustomer) {
      chat.readByCustomer = seq;
      renderReceipts(chat);
    }
  }

  function renderReceipts(chat) {
    for (const receipt of chat.node.querySelectorAll(".msg.agent[data-seq] .receipt")) {
      const seq = Number(receipt.closest(".msg").dataset.seq);
      const read = seq <= chat.readByCustomer;
      if ((receipt.dataset.read === "true") !== read) {
        receipt.dataset.read = String(read);
        receipt.textContent = read ? "Read" : "Sent";
      }
    }
  }

  function maybeSendRead(chat) {
    if (chat.status !== "active" || document.visibilityState !== "visible") return;
    if (chat.lastSeq <= chat.readSent) return;
    let hasCustomer = false;
    for (let s = chat.readSent + 1; s <= chat.lastSeq; s += 1) {
      if (chat.messages.get(s)?.sender === "customer") {
        hasCustomer = true;
        break;
      }
    }
    if (!hasCustomer) return;
    if (socket.send({ type: "read", session_id: chat.id, seq: chat.lastSeq })) {
      chat.readSent = chat.lastSeq;
    }
  }

  function showTyping(chat) {
    show(q(chat.node, ".typing"), chat.status === "active");
    clearTimeout(chat.typingTimer);
    chat.typingTimer = setTimeout(() => hideTyping(chat), TYPING_SHOW_MS);
  }
  function hideTyping(chat) {
    clearTimeout(chat.typingTimer);
    show(q(chat.node, ".typing"), false);
  }

  function renderCount(chat) {
    const input = q(chat.node, ".composer-input");
    const count = q(chat.node, ".composer-count");
    const n = input.value.length;
    const max = CONFIG.max_message_chars;
    count.textContent = n > max * 0.8 ? `${n} / ${max}` : "";
    count.dataset.over = String(n > max);
  }

  function onError(frame, chat) {
    if (chat && frame.client_msg_id && chat.pending.has(frame.client_msg_id)) {
      const p = chat.pending.get(frame.client_msg_id);
      clearTimeout(p.timer);
      p.state = "failed";
      p.detail = frame.detail || "";
      renderPending(chat, frame.client_msg_id, p);
      return;
    }
    for (const other of app.chats.values()) {
      if (other.offer && other.offer.accepting) {
        other.offer.accepting = false;
        renderChat(other);
      }
    }
    banner(frame.detail || "Something went wrong.", "error", 8000);
  }

  // ---------------------------------------------------------------- panes and layout

  function emptyPane(index) {
    const node = dom.paneTemplate.content.firstElementChild.cloneNode(true);
    node.dataset.state = "empty";
    q(node, ".seat-label").textContent = `Seat ${index + 1}`;
    return node;
  }

  /** Seat i shows the session the server put on seat i; finished chats stay until closed. */
  function layout() {
    const n = Math.max(1, app.agent?.capacity || CONFIG.agent.capacity || 1);
    while (app.slots.length < n) {
      const index = app.slots.length;
      const node = h("div", { className: "slot" });
      const empty = emptyPane(index);
      node.append(empty);
      dom.seats.append(node);
      app.slots.push({ node, empty, chatId: null });
    }
    while (app.slots.length > n) app.slots.pop().node.remove();

    const wanted = new Array(n).fill(null);
    (app.agent?.seats || []).forEach((seat, i) => {
      if (i < n && seat.session_id && app.chats.has(seat.session_id)) wanted[i] = seat.session_id;
    });
    const placed = new Set(wanted.filter(Boolean));
    // Keep others where they are, then put the rest in the first free seat.
    app.slots.forEach((slot, i) => {
      if (wanted[i] === null && slot.chatId && app.chats.has(slot.chatId) && !placed.has(slot.chatId)) {
        wanted[i] = slot.chatId;
        placed.add(slot.chatId);
      }
    });
    for (const chat of app.chats.values()) {
      if (placed.has(chat.id)) continue;
      const free = wanted.indexOf(null);
      if (free >= 0) {
        wanted[free] = chat.id;
        placed.add(chat.id);
      } else if (LIVE.has(chat.status)) {
        // A live chat must have a seat: a finished one makes room.
        const victim = wanted.findIndex((id) => !LIVE.has(app.chats.get(id)?.status));
        if (victim >= 0) {
          const old = app.chats.get(wanted[victim]);
          wanted[victim] = chat.id;
          placed.add(chat.id);
          if (old) {
            app.chats.delete(old.id);
            old.node.remove();
          }
        }
      }
    }
    app.slots.forEach((slot, i) => {
      const chat = wanted[i] ? app.chats.get(wanted[i]) : null;
      const node = chat ? chat.node : slot.empty;
      slot.chatId = chat ? chat.id : null;
      if (chat) q(node, ".seat-label").textContent = `Seat ${i + 1}`;
      if (slot.node.firstElementChild !== node) slot.node.replaceChildren(node);
    });
    renderEmptyHints();
  }

  function renderEmptyHints() {
    const status = app.agent?.status || "offline";
    const hint = {
      offline: "Start your shift to receive chats.",
      available: "Waiting for the next customer…",
      break_pending: "No new chats until your break.",
      on_break: "You are on a break.",
      away: "Say you are back to receive chats again.",
    }[status] || "";
    for (const slot of app.slots) q(slot.empty, ".empty-hint").textContent = hint;
  }

  function renderChat(chat) {
    const node = chat.node;
    const status = chat.status;
    node.dataset.state = status;
    node.classList.toggle("selected", app.selectedId === chat.id);
    q(node, ".customer-name").textContent = chat.customerName || "Customer";
    q(node, ".topic").textContent = chat.topic || "";

    const offering = status === "offered" && chat.offer;
    show(q(node, ".offer"), Boolean(offering));
    if (offering) {
      q(node, ".offer-name").textContent = chat.customerName || "A customer";
      q(node, ".offer-topic").textContent = chat.topic ? `“${chat.topic}”` : "No topic given";
      const busy = Boolean(chat.offer.accepting) || app.socketState !== "open";
      q(node, ".act-accept").disabled = busy;
      q(node, ".act-decline").disabled = busy;
      q(node, ".act-accept").textContent = chat.offer.accepting ? "Accepting…" : "Accept";
      renderCountdown(chat);
    }
    const transcript = q(node, ".transcript");
    show(transcript, !offering);

    const live = status === "active";
    show(q(node, ".composer"), live);
    show(q(node, ".act-end"), live && chat.endRequestedBy !== "agent");
    q(node, ".act-end").textContent = chat.endRequestedBy === "customer" ? "End chat" : "End chat…";
    show(q(node, ".act-close"), !LIVE.has(status) && status !== "unknown");
    if (!live) hideTyping(chat);

    // Flags: presence of the customer, and anything unusual about the chat.
    const presence = q(node, ".presence");
    if (live && !chat.customerConnected) {
      presence.textContent = "Customer disconnected";
      presence.dataset.kind = "warn";
      show(presence, true);
    } else if (live) {
      presence.textContent = "Customer online";
      presence.dataset.kind = "ok";
      show(presence, true);
    } else {
      show(presence, false);
    }
    const flag = q(node, ".state");
    const flagText = { ended: "Ended", incomplete: "Incomplete", waiting: "Back in queue", gone: "No longer yours" }[status];
    flag.textContent = flagText || "";
    flag.dataset.kind = status === "ended" ? "" : "bad";
    show(flag, Boolean(flagText));

    // The notice line under the transcript.
    const notice = q(node, ".end-notice");
    const text = q(notice, ".notice-text");
    const confirm = q(notice, ".act-confirm");
    const keep = q(notice, ".act-keep");
    show(confirm, false);
    show(keep, false);
    notice.dataset.kind = "";
    let message = "";
    if (status === "active" && chat.endRequestedBy === "customer") {
      message = "The customer would like to end the chat.";
      show(confirm, true);
      show(keep, true);
    } else if (status === "active" && chat.endRequestedBy === "agent") {
      message = "You asked to end the chat. Waiting for the customer to confirm…";
      notice.dataset.kind = "info";
    } else if (status === "active" && !chat.customerConnected) {
      message = "The customer's app is disconnected. Their seat is held for a while; replies reach them when they are back.";
    } else if (status === "incomplete") {
      message = "The customer left and did not come back in time. The chat is incomplete; they can resume it later.";
    } else if (status === "ended") {
      message = END_REASONS[chat.endReason] || "The chat has ended.";
      notice.dataset.kind = "done";
    } else if (status === "waiting") {
      message = "This chat went back to the queue.";
      notice.dataset.kind = "done";
    } else if (status === "gone") {
      message = "This chat is no longer assigned to you.";
      notice.dataset.kind = "done";
    }
    text.textContent = message;
    show(notice, Boolean(message));
    q(node, ".composer-input").disabled = !live;
  }

  function renderCountdown(chat) {
    const countdown = q(chat.node, ".countdown");
    const fill = q(countdown, ".countdown-fill");
    const label = q(countdown, ".countdown-text");
    if (!chat.offer || !chat.offer.expiresAt) {
      fill.style.width = "100%";
      label.textContent = "";
      return;
    }
    const left = Math.min(chat.offer.expiresAt - serverNow(), chat.offer.totalMs);
    const secs = Math.max(0, Math.ceil(left / 1000));
    fill.style.width = `${Math.max(0, Math.min(100, (left / chat.offer.totalMs) * 100))}%`;
    label.textContent = `${secs} s`;
    countdown.dataset.urgent = String(secs <= 5);
    countdown.setAttribute("aria-label", `${secs} seconds left to accept`);
  }

  function tickOffers() {
    let offers = 0;
    for (const chat of app.chats.values()) {
      if (chat.status === "offered" && chat.offer) {
        offers += 1;
        renderCountdown(chat);
      }
    }
    renderTitle(offers);
  }

  // ---------------------------------------------------------------- title and unread

  let unread = 0;
  function bumpUnread() {
    unread += 1;
    renderTitle();
  }
  window.addEventListener("focus", () => {
    unread = 0;
    renderTitle();
    for (const chat of app.chats.values()) maybeSendRead(chat);
  });
  document.addEventListener("visibilitychange", () => {
    for (const chat of app.chats.values()) maybeSendRead(chat);
  });
  function renderTitle(offers) {
    const n = offers ?? [...app.chats.values()].filter((c) => c.status === "offered").length;
    if (n > 0) document.title = `● New chat · DayOne Console`;
    else if (unread > 0) document.title = `(${unread}) DayOne Console`;
    else document.title = "DayOne Console";
  }

  // ---------------------------------------------------------------- status and controls

  function renderControls() {
    const st = app.agent?.status || "offline";
    const online = app.socketState === "open";
    // The server's count (seats holding an offered or active session) when it has told us.
    const chats = app.agent
      ? (app.agent.seats || []).filter((seat) => seat.session_id).length
      : [...app.chats.values()].filter((c) => LIVE.has(c.status)).length;
    dom.pill.dataset.status = st;
    let label = STATUS_LABELS[st] || st;
    if (st === "break_pending" && app.agent?.after_chats === "offline") label = "Shift ends after current chats";
    if (st === "break_pending" && chats > 0) label += ` (${chats} left)`;
    dom.statusLabel.textContent = label;
    const since = app.agent?.status_changed_at;
    dom.statusSince.textContent = since && st !== "offline" ? `since ${fmtTime(since)}` : "";

    show(dom.btnStart, st === "offline");
    show(dom.btnBreak, st === "available");
    dom.btnBreak.textContent = chats > 0 ? "Break after current chats" : "Take a break";
    show(dom.btnBack, st === "on_break" || st === "break_pending" || st === "away");
    dom.btnBack.textContent = { on_break: "Back from break", break_pending: "Cancel break", away: "I'm back" }[st] || "Back from break";
    const shiftEndPending = st === "break_pending" && app.agent?.after_chats === "offline";
    show(dom.btnEnd, st !== "offline" && !shiftEndPending);
    dom.btnEnd.textContent = chats > 0 ? "End shift after current chats" : "End shift";
    for (const b of [dom.btnStart, dom.btnBreak, dom.btnBack, dom.btnEnd]) b.disabled = !online;
    renderEmptyHints();
  }

  for (const button of [dom.btnStart, dom.btnBreak, dom.btnBack, dom.btnEnd]) {
    button.addEventListener("click", () => {
      if (!socket.send({ type: button.dataset.action })) banner("Not connected: try again in a moment.", "warn", 4000);
    });
  }

  // ---------------------------------------------------------------- queue summary

  function renderQueue(waiting, longest) {
    show(dom.queue, true);
    dom.queueWaiting.textContent = waiting === null || waiting === undefined ? "–" : String(waiting);
    dom.queueLongest.textContent = fmtDuration(longest);
    dom.queue.dataset.busy = String((waiting || 0) > 0 && (longest || 0) > 120);
  }

  function renderQueueFromAgentState() {
    // Agents without the leads' queue permission see whatever the server puts in agent.state.
    if (CONFIG.can_view_queue) return;
    const queue = app.agent?.queue;
    if (queue && typeof queue === "object") renderQueue(queue.waiting, queue.longest_wait_s);
  }

  async function pollQueue() {
    try {
      const response = await fetch(CONFIG.api.queue, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        renderQueue(data.waiting, data.longest_wait_s);
      } else if (response.status === 403) {
        CONFIG.can_view_queue = false;
        return;
      }
    } catch (_e) {
      // The socket banner already says when the server is unreachable.
    }
    setTimeout(pollQueue, QUEUE_POLL_MS);
  }

  // ---------------------------------------------------------------- customer data panel

  const panel = { tab: "profile", cache: new Map(), loading: null };

  function select(id) {
    if (app.selectedId === id) return;
    app.selectedId = id;
    for (const chat of app.chats.values()) chat.node.classList.toggle("selected", chat.id === id);
    panel.tab = "profile";
    renderPanel();
  }

  for (const tab of dom.panelTabs.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      panel.tab = tab.dataset.tab;
      renderPanel();
    });
  }
  dom.panelRefresh.addEventListener("click", () => renderPanel(true));

  function renderPanel(force = false) {
    const chat = app.selectedId ? app.chats.get(app.selectedId) : null;
    for (const tab of dom.panelTabs.querySelectorAll(".tab")) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === panel.tab));
    }
    if (!chat) {
      dom.panelTitle.textContent = "Customer";
      dom.panelSub.textContent = "Select a chat to see the customer's DayOne data.";
      show(dom.panelTabs, false);
      show(dom.panelRefresh, false);
      show(dom.panelFoot, false);
      dom.panelBody.replaceChildren();
      return;
    }
    dom.panelTitle.textContent = chat.customerName || "Customer";
    dom.panelSub.textContent = chat.topic || "";
    const readable = LIVE.has(chat.status);
    show(dom.panelTabs, readable);
    show(dom.panelRefresh, readable);
    show(dom.panelFoot, readable);
    if (!readable) {
      dom.panelBody.replaceChildren(h("div", {
        className: "panel-state",
        text: "This chat is no longer yours, so the customer's data is closed.",
      }));
      return;
    }
    loadPanel(chat, panel.tab, force);
  }

  async function loadPanel(chat, what, force) {
    const key = `${chat.id}/${what}`;
    const cached = panel.cache.get(key);
    if (cached && !force) {
      drawPanel(chat, what, cached);
      return;
    }
    dom.panelBody.replaceChildren(h("div", { className: "panel-state", text: "Loading…" }));
    let result;
    try {
      const response = await fetch(`${CONFIG.api.customers}${encodeURIComponent(chat.id)}/${what}`, {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      let body = null;
      try {
        body = await response.json();
      } catch (_e) {
        body = null;
      }
      result = { status: response.status, body };
    } catch (_e) {
      result = { status: 0, body: null };
    }
    // Failures are kept too: the panel does not ask again (and log another read) on its own;
    // "Try again" and "Refresh" do.
    panel.cache.set(key, result);
    if (app.selectedId === chat.id && panel.tab === what) drawPanel(chat, what, result);
  }

  function drawPanel(chat, what, result) {
    const { status, body } = result;
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    const retry = () => h("button", { type: "button", className: "button small", text: "Try again", onclick: () => renderPanel(true) });
    if (status === 200) {
      const view = { profile: drawProfile, orders: drawOrders, transactions: drawTransactions }[what];
      dom.panelBody.replaceChildren(view(body));
    } else if (status === 503 || status === 0 || status >= 500) {
      dom.panelBody.replaceChildren(h("div", { className: "panel-state", dataset: { kind: "outage" } },
        h("strong", { text: "DayOne data is unavailable right now." }), h("br"),
        detail || "The service did not answer.", h("br"),
        h("span", { className: "small", text: "The chat is not affected." }), h("br"), retry()));
    } else if (status === 404) {
      dom.panelBody.replaceChildren(h("div", { className: "panel-state", text: detail || "DayOne has no record of this customer." }));
    } else {
      dom.panelBody.replaceChildren(h("div", { className: "panel-state", dataset: { kind: "error" } },
        h("strong", { text: status === 403 ? "No access." : "Could not load this." }), " ", detail));
    }
  }

  function drawProfile(p) {
    const row = (label, value) => [h("dt", { text: label }), h("dd", {}, value || "–")];
    return h("dl", { className: "kv profile" },
      row("Name", p.full_name),
      row("Tier", p.tier ? h("span", { className: "tier", dataset: { tier: p.tier }, text: p.tier }) : ""),
      row("Customer since", p.customer_since ? fmtDate(p.customer_since) : ""),
      row("Email", p.email),
      row("Phone", p.phone),
      row("Location", [p.city, p.country].filter(Boolean).join(", ")),
      row("DayOne id", p.customer_ref));
  }

  function drawOrders(data) {
    const orders = data.results || [];
    if (!orders.length) return h("div", { className: "panel-state", text: "No orders." });
    return h("ol", { className: "records orders" }, orders.map((o) => h("li", { className: "record order" },
      h("div", { className: "record-head" },
        h("span", { className: "record-title", text: o.number }),
        h("span", { className: "badge", dataset: { status: o.status }, text: o.status }),
        h("span", { className: "record-amount", text: fmtMoney(o.total_cents, o.currency) })),
      h("div", { className: "record-sub", text: `Placed ${fmtDate(o.placed_at)}` }),
      h("ul", { className: "items" }, (o.items || []).map((it) => h("li", {},
        h("span", { className: "qty", text: `${it.quantity}×` }),
        h("span", { className: "name", text: it.name }),
        h("span", { className: "price", text: fmtMoney(it.unit_price_cents, o.currency) })))))));
  }

  function drawTransactions(data) {
    const rows = data.results || [];
    if (!rows.length) return h("div", { className: "panel-state", text: "No transactions." });
    return h("ol", { className: "records transactions" }, rows.map((t) => h("li", { className: "record transaction" },
      h("div", { className: "record-head" },
        h("span", { className: "record-title", text: t.reference }),
        h("span", { className: "badge", dataset: { kind: t.kind }, text: t.kind }),
        h("span", { className: "record-amount", dataset: { negative: String(t.amount_cents < 0) }, text: fmtMoney(t.amount_cents, t.currency) })),
      h("div", { className: "record-sub", text: [fmtDate(t.created_at), t.method, t.order_number ? `order ${t.order_number}` : ""].filter(Boolean).join(" · ") }))));
  }

  // ---------------------------------------------------------------- start

  layout();
  renderControls();
  renderPanel();
  setInterval(tickOffers, 250);
  if (CONFIG.can_view_queue) pollQueue();
  socket.connect();

  // For people debugging in the browser console, and for the browser tests.
  window.dayoneConsole = {
    get socket() { return socket; },
    get chats() { return app.chats; },
    get agent() { return app.agent; },
    drop: () => socket.drop(),
  };
})();
