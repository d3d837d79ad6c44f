// One WebSocket (RFC 8887) with push for every type; reconnects with backoff and resumes by pushState.
import { AuthError } from "./api.js";

const MAX_DELAY = 30000;

export class Push {
  constructor(client, onChange, onStatus) {
    this.client = client;
    this.onChange = onChange;
    this.onStatus = onStatus;
    this.pushState = null;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = true;
    this.wake = () => this.reconnectNow();
  }

  start() {
    this.stopped = false;
    addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", this.wake);
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    removeEventListener("online", this.wake);
    document.removeEventListener("visibilitychange", this.wake);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  // After sleep or a network change: do not wait for the backoff.
  reconnectNow() {
    if (this.stopped || document.visibilityState === "hidden") return;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.open();
  }

  async open() {
    if (this.stopped) return;
    this.onStatus("connecting");
    let ticket;
    try {
      ticket = await this.client.wsTicket();
    } catch (e) {
      if (!(e instanceof AuthError)) this.retry();
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(`${this.client.webSocketUrl()}?ticket=${encodeURIComponent(ticket)}`, "jmap");
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.onStatus("live");
      ws.send(JSON.stringify({ "@type": "WebSocketPushEnable", dataTypes: null, pushState: this.pushState }));
      this.onChange(null); // whatever happened while no socket was open
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message["@type"] !== "StateChange") return;
      if (message.pushState) this.pushState = message.pushState;
      this.onChange(message.changed);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onStatus("offline");
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    const delay = Math.min(MAX_DELAY, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }
}
