// The message list: one Email/query page at a time (newest first, threads collapsed), more on scroll;
// kept current with Email/changes (rows' flags) and Email/queryChanges (rows coming and going).
import { $, el, shortDate, who } from "./util.js";

const PAGE = 50;
export const LIST_PROPS = ["threadId", "mailboxIds", "keywords", "from", "to", "subject", "receivedAt", "preview", "hasAttachment"];
const SORT = [{ property: "receivedAt", isAscending: false }];

export class MessageList {
  constructor(app) {
    this.app = app;
    this.mailboxId = null;
    this.search = "";
    this.ids = [];
    this.emails = new Map();
    this.threadSizes = new Map();
    this.total = 0;
    this.queryState = null;
    this.emailState = null;
    this.selected = -1;
    this.loading = false;
    const node = $("message-list");
    node.addEventListener("scroll", () => {
      if (node.scrollTop + node.clientHeight > node.scrollHeight - 400) this.more();
    });
  }

  query() {
    const filter = {};
    if (this.search) filter.text = this.search;
    else filter.inMailbox = this.mailboxId;
    return { filter, sort: SORT, collapseThreads: true };
  }

  title() {
    if (this.search) return `Search: ${this.search}`;
    const m = this.app.mailboxes.byId.get(this.mailboxId);
    return m ? m.name : "Mail";
  }

  pageCalls(position) {
    const accountId = this.app.client.accountId;
    return [
      ["Email/query", { accountId, ...this.query(), position, limit: PAGE, calculateTotal: true }, "q"],
      ["Email/get", { accountId, "#ids": { resultOf: "q", name: "Email/query", path: "/ids" }, properties: LIST_PROPS }, "g"],
      ["Thread/get", { accountId, "#ids": { resultOf: "g", name: "Email/get", path: "/list/*/threadId" } }, "t"],
    ];
  }

  keep(out, get, threads) {
    if (get && !get.error) for (const e of get.list) this.emails.set(e.id, e);
    if (threads && !threads.error) for (const t of threads.list) this.threadSizes.set(t.id, t.emailIds.length);
  }

  async open(mailboxId, search = "") {
    this.mailboxId = mailboxId;
    this.search = search;
    this.ids = [];
    this.selected = -1;
    this.loading = true;
    $("list-title").textContent = this.title();
    const out = await this.app.client.request(this.pageCalls(0));
    this.loading = false;
    if (out.q.error) {
      $("list-status").textContent = `The list could not be loaded: ${out.q.description}`;
      this.render();
      return;
    }
    this.ids = out.q.ids;
    this.total = out.q.total;
    this.queryState = out.q.queryState;
    if (this.emailState === null) this.emailState = out.g.state;
    this.keep(out, out.g, out.t);
    this.render();
  }

  async more() {
    if (this.loading || this.ids.length >= this.total) return;
    this.loading = true;
    try {
      const out = await this.app.client.request(this.pageCalls(this.ids.length));
      if (!out.q.error && out.q.queryState === this.queryState) {
        this.ids.push(...out.q.ids.filter((id) => !this.ids.includes(id)));
        this.keep(out, out.g, out.t);
        this.render();
      }
    } finally {
      this.loading = false;
    }
  }

  // The calls that bring the open list up to date (answers under ec, eg, qc, qg, qt).
  changeCalls(accountId) {
    const calls = [
      ["Email/changes", { accountId, sinceState: this.emailState, maxChanges: 500 }, "ec"],
      ["Email/get", { accountId, "#ids": { resultOf: "ec", name: "Email/changes", path: "/updated" }, properties: LIST_PROPS }, "eg"],
    ];
    if (this.queryState) {
      calls.push(
        ["Email/queryChanges", { accountId, ...this.query(), sinceQueryState: this.queryState, calculateTotal: true }, "qc"],
        ["Email/get", { accountId, "#ids": { resultOf: "qc", name: "Email/queryChanges", path: "/added/*/id" }, properties: LIST_PROPS }, "qg"],
        ["Thread/get", { accountId, "#ids": { resultOf: "qg", name: "Email/get", path: "/list/*/threadId" } }, "qt"],
      );
    }
    return calls;
  }

  // Apply the answers; false when they cannot be followed (reopen the list instead).
  applyChanges(out) {
    if (!out.ec || out.ec.error) return false;
    for (const id of out.ec.destroyed) this.emails.delete(id);
    this.keep(out, out.eg, null);
    this.emailState = out.ec.newState;
    if (this.queryState) {
      if (!out.qc || out.qc.error) return false;
      const current = this.ids[this.selected];
      const removed = new Set(out.qc.removed);
      this.ids = this.ids.filter((id) => !removed.has(id));
      for (const { id, index } of out.qc.added.sort((a, b) => a.index - b.index)) {
        if (index <= this.ids.length) this.ids.splice(index, 0, id);
      }
      this.keep(out, out.qg, out.qt);
      this.total = out.qc.total ?? this.total;
      this.queryState = out.qc.newQueryState;
      this.selected = current ? this.ids.indexOf(current) : -1;
    }
    this.render();
    return !out.ec.hasMoreChanges;
  }

  row(id, index) {
    const e = this.emails.get(id);
    if (!e) return el("li", { role: "option", class: "row", "aria-selected": "false", text: "…" });
    const unread = !e.keywords.$seen;
    const flagged = !!e.keywords.$flagged;
    const count = this.threadSizes.get(e.threadId) || 1;
    const sent = this.app.mailboxes.byId.get(this.mailboxId)?.role === "sent";
    const name = sent ? `To: ${(e.to || []).map(who).join(", ")}` : (e.from || []).map(who).join(", ");
    const label = `${unread ? "Unread. " : ""}${flagged ? "Flagged. " : ""}${name}. ${e.subject || "(no subject)"}. ${shortDate(e.receivedAt)}`;
    const li = el(
      "li",
      {
        role: "option",
        id: `row-${id}`,
        class: `row${unread ? " unread" : ""}${flagged ? " flagged" : ""}${this.app.reader.emailId === id ? " open" : ""}`,
        "data-id": id,
        "aria-selected": index === this.selected ? "true" : "false",
        "aria-label": label,
        draggable: "true",
        onclick: () => this.select(index, true),
      },
      el("span", { class: "from", text: name || "(nobody)" }),
      count > 1 ? el("span", { class: "thread", text: String(count), "aria-hidden": "true" }) : null,
      el("span", { class: "date", text: shortDate(e.receivedAt) }),
      el("span", { class: "subject", text: e.subject || "(no subject)" }),
      el("span", { class: "preview", text: e.preview || "" }),
      flagged ? el("span", { class: "flag", text: "⚑", "aria-hidden": "true" }) : null,
      e.hasAttachment ? el("span", { class: "clip", text: "📎", "aria-hidden": "true" }) : null,
    );
    li.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData("text/x-jmap-email", id);
      event.dataTransfer.effectAllowed = "move";
    });
    return li;
  }

  render() {
    const node = $("message-list");
    node.replaceChildren(...this.ids.map((id, i) => this.row(id, i)));
    node.setAttribute("aria-activedescendant", this.selected >= 0 && this.ids[this.selected] ? `row-${this.ids[this.selected]}` : "");
    const shown = this.ids.length;
    $("list-status").textContent = shown === 0 ? (this.search ? "No message matches." : "No messages.") : shown < this.total ? `${shown} of ${this.total}` : "";
    $("list-title").textContent = this.title();
  }

  select(index, open = false) {
    if (index < 0 || index >= this.ids.length) return;
    this.selected = index;
    this.render();
    const row = $(`row-${this.ids[index]}`);
    if (row) row.scrollIntoView({ block: "nearest" });
    if (index > this.ids.length - 10) this.more();
    if (open) this.app.reader.open(this.ids[index]);
  }

  move(step) {
    this.select(Math.max(0, Math.min(this.ids.length - 1, this.selected + step)));
  }

  current() {
    return this.ids[this.selected] || this.app.reader.emailId;
  }
}
