// The REST half of the public contract (docs/protocol.md), as a mobile client would use it.
//
// Tokens: POST /api/auth/token gives {access, refresh}. Both are kept in sessionStorage, which
// belongs to this tab only and is gone when the tab closes; nothing goes into cookies, so the
// API never sees a session cookie from this page and CSRF does not apply. The access token is
// refreshed shortly before it expires (and once more on a 401) with the refresh token.

const STORE_KEY = "dayone.customer.auth";
const REFRESH_MARGIN_S = 30;

export class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.detail) || `The server answered ${status}.`;
    super(detail);
    this.status = status;
    this.code = (body && body.code) || (status === 0 ? "network" : "error");
    this.body = body || {};
  }
}

function decodeJwtExp(token) {
  // Only to know when to refresh; the server is the one that verifies the token.
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return typeof json.exp === "number" ? json.exp : null;
  } catch {
    return null;
  }
}

export class Api {
  constructor({ base = "/api/", onLoggedOut = () => {} } = {}) {
    this.base = base;
    this.onLoggedOut = onLoggedOut;
    this.auth = this._load();
    this._refreshing = null;
  }

  get loggedIn() {
    return Boolean(this.auth && (this.auth.access || this.auth.refresh));
  }

  get username() {
    return (this.auth && this.auth.username) || "";
  }

  _load() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE_KEY)) || null;
    } catch {
      return null;
    }
  }

  _save(auth) {
    this.auth = auth;
    if (auth) sessionStorage.setItem(STORE_KEY, JSON.stringify(auth));
    else sessionStorage.removeItem(STORE_KEY);
  }

  async login(username, password) {
    const body = await this._fetch("POST", "auth/token", { username, password }, null);
    this._save({ access: body.access, refresh: body.refresh, username });
  }

  logout() {
    const was = this.loggedIn;
    this._save(null);
    if (was) this.onLoggedOut();
  }

  async _accessToken() {
    if (!this.auth) throw new ApiError(401, { code: "not_authenticated", detail: "Please log in." });
    const exp = this.auth.access ? decodeJwtExp(this.auth.access) : 0;
    const expiring = exp !== null && exp - Date.now() / 1000 < REFRESH_MARGIN_S;
    if ((!this.auth.access || expiring) && this.auth.refresh) await this._refresh();
    return this.auth.access;
  }

  _refresh() {
    // One refresh at a time: several requests may find the token stale together.
    if (!this._refreshing) {
      const refresh = this.auth && this.auth.refresh;
      this._refreshing = this._fetch("POST", "auth/token/refresh", { refresh }, null)
        .then((body) => {
          this._save({ ...this.auth, access: body.access, refresh: body.refresh || refresh });
        })
        .catch((error) => {
          if (error.status === 401 || error.status === 400 || error.status === 404) {
            this.logout();
          }
          throw error;
        })
        .finally(() => {
          this._refreshing = null;
        });
    }
    return this._refreshing;
  }

  async _fetch(method, path, body, token) {
    const url = path.startsWith("/") || path.startsWith("http") ? path : this.base + path;
    const headers = { Accept: "application/json" };
    if (body !== undefined && body !== null) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined || body === null ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, { code: "network", detail: "We can't reach DayOne right now." });
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  /** An authenticated call; on a 401 the token is refreshed once and the call repeated. */
  async request(method, path, body) {
    const token = await this._accessToken();
    try {
      return await this._fetch(method, path, body, token);
    } catch (error) {
      if (error.status !== 401) throw error;
      if (this.auth && this.auth.refresh) {
        await this._refresh();
        try {
          return await this._fetch(method, path, body, this.auth.access);
        } catch (again) {
          if (again.status === 401) this.logout();
          throw again;
        }
      }
      this.logout();
      throw error;
    }
  }

  listSessions(next) {
    return this.request("GET", next || "sessions");
  }

  createSession(topic) {
    return this.request("POST", "sessions", topic ? { topic } : {});
  }

  getSession(id) {
    return this.request("GET", `sessions/${encodeURIComponent(id)}`);
  }

  messages(id, afterSeq, limit = 200) {
    const query = `after_seq=${encodeURIComponent(afterSeq)}&limit=${limit}`;
    return this.request("GET", `sessions/${encodeURIComponent(id)}/messages?${query}`);
  }

  resume(id) {
    return this.request("POST", `sessions/${encodeURIComponent(id)}/resume`);
  }

  wsTicket() {
    return this.request("POST", "auth/ws-ticket");
  }
}
