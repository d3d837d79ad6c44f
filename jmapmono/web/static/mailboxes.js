// Mailboxes: roles first, then the tree; unread counts; drop targets for moving messages.
import { $, el, size } from "./util.js";

const ROLE_ORDER = ["inbox", "drafts", "sent", "archive", "junk", "trash"];
const PROPS = ["name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails", "totalThreads", "unreadThreads"];

export class Mailboxes {
  constructor(app) {
    this.app = app;
    this.byId = new Map();
    this.state = null;
  }

  async load() {
    const result = await this.app.client.call("Mailbox/get", { ids: null, properties: PROPS });
    this.byId = new Map(result.list.map((m) => [m.id, m]));
    this.state = result.state;
  }

  // The calls that bring the mailboxes up to date (answers under mc, mg1, mg2).
  changeCalls(accountId) {
    const ref = (path) => ({ resultOf: "mc", name: "Mailbox/changes", path });
    return [
      ["Mailbox/changes", { accountId, sinceState: this.state }, "mc"],
      ["Mailbox/get", { accountId, "#ids": ref("/created"), properties: PROPS }, "mg1"],
      ["Mailbox/get", { accountId, "#ids": ref("/updated"), properties: PROPS }, "mg2"],
    ];
  }

  // Apply the answers; false when the changes cannot be followed (reload instead).
  applyChanges(out) {
    const changes = out.mc;
    if (!changes || changes.error) return false;
    for (const id of changes.destroyed) this.byId.delete(id);
    for (const key of ["mg1", "mg2"]) if (out[key] && !out[key].error) for (const m of out[key].list) this.byId.set(m.id, m);
    this.state = changes.newState;
    return !changes.hasMoreChanges;
  }

  // The account's quotas (RFC 9425), shown under the mailboxes; nothing when the account has none.
  async loadQuota() {
    try {
      this.quotas = (await this.app.client.call("Quota/get", { ids: null })).list;
    } catch {
      this.quotas = [];
    }
    const line = $("quota");
    const parts = this.quotas.map((q) =>
      q.resourceType === "octets" ? `${size(q.used)} of ${size(q.hardLimit)}` : `${q.used} of ${q.hardLimit} messages`,
    );
    line.textContent = parts.length ? `Used: ${parts.join(" · ")}` : "";
    line.hidden = parts.length === 0;
  }

  byRole(role) {
    for (const m of this.byId.values()) if (m.role === role) return m;
    return null;
  }

  // Role mailboxes in the usual order, then the rest as a tree sorted by sortOrder and name.
  ordered() {
    const all = [...this.byId.values()];
    const rank = (m) => (m.role && ROLE_ORDER.includes(m.role) ? ROLE_ORDER.indexOf(m.role) : ROLE_ORDER.length);
    const roots = all.filter((m) => m.role && ROLE_ORDER.includes(m.role)).sort((a, b) => rank(a) - rank(b));
    const children = new Map();
    for (const m of all) {
      if (roots.includes(m)) continue;
      const parent = m.parentId && this.byId.has(m.parentId) ? m.parentId : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(m);
    }
    const out = [];
    const walk = (parent, depth) => {
      const list = (children.get(parent) || []).sort((a, b) => a.sortOrder - b.sortOrder || a.name.localeCompare(b.name));
      for (const m of list) {
        out.push({ m, depth });
        walk(m.id, depth + 1);
      }
    };
    for (const m of roots) {
      out.push({ m, depth: 0 });
      walk(m.id, 1);
    }
    walk(null, 0);
    return out;
  }

  render() {
    const list = $("mailbox-list");
    const current = this.app.list.mailboxId;
    list.replaceChildren(
      ...this.ordered().map(({ m, depth }) => {
        const unread = m.unreadEmails > 0 ? el("span", { class: "count", text: String(m.unreadEmails), "aria-label": `${m.unreadEmails} unread` }) : null;
        const button = el(
          "button",
          { type: "button", class: `mailbox depth${Math.min(depth, 4)}`, "data-id": m.id, "aria-current": m.id === current ? "true" : null, onclick: () => this.app.openMailbox(m.id) },
          el("span", { class: "name", text: m.name }),
          unread,
        );
        button.addEventListener("dragover", (e) => {
          e.preventDefault();
          button.classList.add("drop");
        });
        button.addEventListener("dragleave", () => button.classList.remove("drop"));
        button.addEventListener("drop", (e) => {
          e.preventDefault();
          button.classList.remove("drop");
          const id = e.dataTransfer.getData("text/x-jmap-email");
          if (id) this.app.actions.move([id], m.id);
        });
        return el("li", { role: "treeitem", "aria-level": String(depth + 1), "aria-selected": m.id === current ? "true" : "false" }, button);
      }),
    );
    const moveTo = $("move-to");
    moveTo.replaceChildren(
      el("option", { value: "", text: "Move to…" }),
      ...this.ordered().map(({ m, depth }) => el("option", { value: m.id, text: "\u00a0\u00a0".repeat(depth) + m.name })),
    );
    const inbox = this.byRole("inbox");
    const unread = inbox ? inbox.unreadEmails : 0;
    document.title = `${unread ? `(${unread}) ` : ""}${this.app.list.title()} — jmapmono`;
  }
}
