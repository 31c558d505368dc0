// The session socket (/ws/sessions/{id}/) with reconnection.
//
// Every connection attempt takes a fresh single-use ticket (POST /api/auth/ws-ticket) and puts
// only that ticket in the URL, never a token. After a drop it waits an exponentially growing,
// jittered delay (so a server restart is not met by every client at the same instant) and
// reconnects with ?after_seq= set to the last message the page has, so the server replays exactly
// what was missed. The page itself dedupes by seq and resends unacknowledged messages.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
// Close codes after which retrying cannot help: the session is not the caller's, or gone.
const FATAL_CODES = new Set([4403, 4404]);
const AUTH_CODE = 4401;
const MAX_AUTH_FAILURES = 3;

export function backoffDelay(attempt, random = Math.random) {
  // "Equal jitter": half the exponential step for sure, the other half at random.
  const step = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return Math.round(step / 2 + random() * (step / 2));
}

export class ChatSocket {
  /**
   * @param {object} options
   * @param {import("./api.js").Api} options.api
   * @param {string} options.sessionId
   * @param {string} options.wsBase  e.g. "/ws/"
   * @param {() => number} options.afterSeq  the highest seq the page holds without a gap
   * @param {(frame: object) => void} options.onFrame
   * @param {(state: string, info?: object) => void} options.onStatus
   *        "connecting" | "open" | "reconnecting" | "failed" | "closed"
   */
  constructor({ api, sessionId, wsBase, afterSeq, onFrame, onStatus }) {
    this.api = api;
    this.sessionId = sessionId;
    this.wsBase = wsBase;
    this.afterSeq = afterSeq;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.ws = null;
    this.attempt = 0;
    this.authFailures = 0;
    this.stopped = false;
    this.timer = null;
    this.everOpened = false;
    this.fetchingTicket = false;
    this._onOnline = () => this.retryNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this._onOnline);
    this._connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this._onOnline);
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.onmessage = null;
      ws.onerror = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        ws.close(1000, "bye");
      }
    }
    this.onStatus("closed");
  }

  get isOpen() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  /** Sends a frame if the socket is open; returns whether it went out. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  _url(ticket) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = `${this.wsBase}sessions/${encodeURIComponent(this.sessionId)}/`;
    const query = `ticket=${encodeURIComponent(ticket)}&after_seq=${this.afterSeq()}`;
    return `${scheme}//${location.host}${path}?${query}`;
  }

  async _connect() {
    if (this.stopped) return;
    this.onStatus(this.everOpened || this.attempt > 0 ? "reconnecting" : "connecting", {
      attempt: this.attempt,
    });
    let ticket;
    this.fetchingTicket = true;
    try {
      ticket = (await this.api.wsTicket()).ticket;
    } catch (error) {
      this.fetchingTicket = false;
      if (this.stopped) return;
      if (error.status === 401 || error.status === 403) {
        // The Api has already tried a refresh and logged out if that failed.
        this.onStatus("failed", { reason: "auth" });
        return;
      }
      this._schedule();
      return;
    }
    this.fetchingTicket = false;
    if (this.stopped) return;
    const ws = new WebSocket(this._url(ticket));
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.authFailures = 0;
      this.everOpened = true;
      this.onStatus("open");
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (FATAL_CODES.has(event.code)) {
        this.onStatus("failed", { reason: "gone", code: event.code });
        return;
      }
      if (event.code === AUTH_CODE) {
        // A ticket that expired between fetching and using it: a fresh one will do; a run of
        // refusals means the login itself is no longer good.
        this.authFailures += 1;
        if (this.authFailures >= MAX_AUTH_FAILURES) {
          this.onStatus("failed", { reason: "auth" });
          return;
        }
      }
      this._schedule();
    };
  }

  _schedule() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.onStatus("reconnecting", { attempt: this.attempt, delayMs: delay });
    this.timer = setTimeout(() => this._connect(), delay);
  }

  /** Skips the rest of the backoff wait (the network or the page is back). */
  retryNow() {
    if (this.stopped || this.ws || this.fetchingTicket) return;
    clearTimeout(this.timer);
    this._connect();
  }
}
