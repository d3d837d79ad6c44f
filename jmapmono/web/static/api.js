// The JMAP client: the Session, the API, uploads and downloads, all with this browser's app password.
const TOKEN = "jmapmono.token";
const EMAIL = "jmapmono.email";
export const USING = [
  "urn:ietf:params:jmap:core",
  "urn:ietf:params:jmap:mail",
  "urn:ietf:params:jmap:submission",
  "urn:ietf:params:jmap:quota",
];

export class AuthError extends Error {}

// Every URL the Session gives is absolute on the configured base URL; the page asks its own origin.
const local = (url) => {
  const u = new URL(url, location.href);
  return u.pathname + u.search;
};

function browserLabel() {
  const ua = navigator.userAgent;
  const name = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return `Web inbox (${name}${os ? " on " + os : ""})`;
}

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.description || body.title || response.statusText;
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

export function savedLogin() {
  const token = sessionStorage.getItem(TOKEN);
  return token ? { token, email: sessionStorage.getItem(EMAIL) || "" } : null;
}

// Log in: the account password is used once, to create this browser's app password, then forgotten.
export async function logIn(email, password) {
  let response;
  try {
    response = await fetch("/jmap/app-passwords", {
      method: "POST",
      headers: {
        Authorization: "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(`${email}:${password}`))),
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ label: browserLabel() }),
    });
  } catch {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  if (response.status === 401) throw new Error("Wrong email or password.");
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After") || "a few";
    throw new Error(`Too many failed logins from here. Try again in ${wait} seconds.`);
  }
  if (!response.ok) throw new Error(`Login failed: ${await problemText(response)}`);
  const created = await response.json();
  sessionStorage.setItem(TOKEN, created.token);
  sessionStorage.setItem(EMAIL, email);
  return { token: created.token, email };
}

export class Client {
  constructor(token, onLoggedOut) {
    this.token = token;
    this.onLoggedOut = onLoggedOut;
    this.session = null;
    this.primaryId = null;
    // The account whose mailbox is open: the user's own, or one shared with them.
    this.accountId = null;
    // Called when an answer says the Session changed (an account shared, delegated or taken back).
    this.onSessionChanged = null;
  }

  async http(path, init = {}) {
    const headers = { ...(init.headers || {}), Authorization: `Bearer ${this.token}` };
    let response;
    try {
      response = await fetch(path, { ...init, headers, cache: "no-store" });
    } catch {
      throw new Error("The server cannot be reached.");
    }
    if (response.status === 401) {
      this.forget();
      this.onLoggedOut("Your session has ended (its app password was revoked). Log in again.");
      throw new AuthError("unauthorized");
    }
    return response;
  }

  async connect() {
    const response = await this.http("/.well-known/jmap");
    if (!response.ok) throw new Error(`The session could not be loaded: ${await problemText(response)}`);
    this.session = await response.json();
    this.primaryId = this.session.primaryAccounts["urn:ietf:params:jmap:mail"];
    if (!this.accountId || !this.session.accounts[this.accountId]) this.accountId = this.primaryId;
    this.apiUrl = local(this.session.apiUrl);
    return this.session;
  }

  // The mail accounts of the Session: the user's own first, then the others by name.
  mailAccounts() {
    const all = Object.entries(this.session.accounts)
      .filter(([, a]) => a.accountCapabilities && "urn:ietf:params:jmap:mail" in a.accountCapabilities)
      .map(([id, a]) => ({ id, name: a.name, isPersonal: a.isPersonal, isReadOnly: a.isReadOnly }));
    const rank = (a) => (a.id === this.primaryId ? 0 : 1);
    return all.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
  }

  // One request of several method calls; the responses by call id (a method error as {error: type, description}).
  async request(calls) {
    const response = await this.http(this.apiUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ using: USING, methodCalls: calls }),
    });
    if (!response.ok) throw new Error(await problemText(response));
    const body = await response.json();
    if (this.session && body.sessionState && body.sessionState !== this.session.state && this.onSessionChanged) {
      this.onSessionChanged();
    }
    const out = {};
    for (const [name, args, id] of body.methodResponses) {
      if (name === "error") out[id] = { error: args.type, description: args.description || args.type };
      else if (!(id in out)) out[id] = args;
      else out[id + "+"] = args; // the implicit call after a submission
    }
    return out;
  }

  // One method call; its arguments, or an Error when the method failed.
  async call(method, args) {
    const result = (await this.request([[method, { accountId: this.accountId, ...args }, "0"]]))["0"];
    if (result.error) throw Object.assign(new Error(result.description), { type: result.error });
    return result;
  }

  downloadPath(blobId, name, type) {
    return local(this.session.downloadUrl
      .replace("{accountId}", encodeURIComponent(this.accountId))
      .replace("{blobId}", encodeURIComponent(blobId))
      .replace("{name}", encodeURIComponent(name || "attachment"))
      .replace("{type}", encodeURIComponent(type || "application/octet-stream")));
  }

  async download(blobId, name, type) {
    const response = await this.http(this.downloadPath(blobId, name, type));
    if (!response.ok) throw new Error(await problemText(response));
    return response.blob();
  }

  async upload(file) {
    const path = local(this.session.uploadUrl.replace("{accountId}", encodeURIComponent(this.accountId)));
    const response = await this.http(path, { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
    if (!response.ok) throw new Error(await problemText(response));
    return response.json();
  }

  // A body part's HTML, cleaned by the server; {html, blocked} or {error}.
  async cleanHtml(part, images) {
    const query = new URLSearchParams();
    if (part.charset) query.set("charset", part.charset);
    if (images) query.set("images", "1");
    const path = `/jmap/html/${encodeURIComponent(this.accountId)}/${encodeURIComponent(part.blobId)}?${query}`;
    const response = await this.http(path);
    if (!response.ok) return { error: await problemText(response) };
    return { html: await response.text(), blocked: Number(response.headers.get("X-Blocked-Images") || 0) };
  }

  async wsTicket() {
    const response = await this.http("/jmap/ws/ticket", { method: "POST" });
    if (!response.ok) throw new Error(await problemText(response));
    return (await response.json()).ticket;
  }

  webSocketUrl() {
    const ws = this.session.capabilities["urn:ietf:params:jmap:websocket"];
    const u = new URL(ws ? ws.url : "/jmap/ws", location.href);
    return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${u.pathname}`;
  }

  forget() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(EMAIL);
  }

  // Log out: this browser's app password revokes itself (it can revoke no other).
  async logOut() {
    try {
      await fetch("/jmap/app-passwords/current", { method: "DELETE", headers: { Authorization: `Bearer ${this.token}` } });
    } finally {
      this.forget();
    }
  }
}
