// Mailboxes of every mail account the user can see (their own first, then those shared with them or
// delegated to them): roles first, then the tree; unread counts; drop targets for moving messages.
import { $, el, size } from "./util.js";

const ROLE_ORDER = ["inbox", "drafts", "sent", "archive", "junk", "trash"];
const PROPS = ["name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails", "totalThreads", "unreadThreads", "myRights"];

// One account's mailboxes, kept current with Mailbox/changes.
export class Mailboxes {
  constructor(app, account) {
    this.app = app;
    this.accountId = account.id;
    this.account = account;
    this.byId = new Map();
    this.state = null;
  }

  async load() {
    const result = await this.app.client.call("Mailbox/get", { accountId: this.accountId, ids: null, properties: PROPS });
    this.byId = new Map(result.list.map((m) => [m.id, m]));
    this.state = result.state;
  }

  // The calls that bring the mailboxes up to date (answers under <prefix>mc, <prefix>mg1, <prefix>mg2).
  changeCalls(prefix = "") {
    const accountId = this.accountId;
    const ref = (path) => ({ resultOf: `${prefix}mc`, name: "Mailbox/changes", path });
    return [
      ["Mailbox/changes", { accountId, sinceState: this.state }, `${prefix}mc`],
      ["Mailbox/get", { accountId, "#ids": ref("/created"), properties: PROPS }, `${prefix}mg1`],
      ["Mailbox/get", { accountId, "#ids": ref("/updated"), properties: PROPS }, `${prefix}mg2`],
    ];
  }

  // Apply the answers; false when the changes cannot be followed (reload instead).
  applyChanges(out, prefix = "") {
    const changes = out[`${prefix}mc`];
    if (!changes || changes.error) return false;
    for (const id of changes.destroyed) this.byId.delete(id);
    for (const key of ["mg1", "mg2"]) {
      const got = out[`${prefix}${key}`];
      if (got && !got.error) for (const m of got.list) this.byId.set(m.id, m);
    }
    this.state = changes.newState;
    return !changes.hasMoreChanges;
  }

  // The account's quotas (RFC 9425), shown under the mailboxes; nothing when the account has none.
  async loadQuota() {
    let answer;
    try {
      answer = await this.app.client.call("Quota/get", { accountId: this.accountId, ids: null });
    } catch {
      answer = null;
    }
    this.showQuota(answer);
  }

  // The call that brings the quotas up to date within another request (its answer under "qq").
  quotaCall() {
    return ["Quota/get", { accountId: this.accountId, ids: null }, "qq"];
  }

  showQuota(answer) {
    this.quotas = answer && !answer.error ? answer.list : [];
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

  // The tree items; mailboxes of the open account take dropped messages (a move stays within an account).
  items(current, level) {
    const open = this.app.client.accountId === this.accountId;
    return this.ordered().map(({ m, depth }) => {
      const unread = m.unreadEmails > 0 ? el("span", { class: "count", text: String(m.unreadEmails), "aria-label": `${m.unreadEmails} unread` }) : null;
      const here = open && m.id === current;
      const button = el(
        "button",
        { type: "button", class: `mailbox depth${Math.min(depth, 4)}`, "data-id": m.id, "data-account": this.accountId, "aria-current": here ? "true" : null, onclick: () => this.app.openMailbox(m.id, this.accountId) },
        el("span", { class: "name", text: m.name }),
        unread,
      );
      if (open && (!m.myRights || m.myRights.mayAddItems)) {
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
      }
      return el("li", { role: "treeitem", "aria-level": String(depth + level), "aria-selected": here ? "true" : "false" }, button);
    });
  }
}

// The sidebar: the user's own mailboxes, then one group per other account; the "Move to" menu of the open
// account; the tab title with the unread count of the user's own Inbox.
export function renderMailboxes(app) {
  const current = app.list.mailboxId;
  const groups = [];
  for (const box of app.accounts.values()) {
    if (box.accountId === app.client.primaryId) {
      groups.push(...box.items(current, 1));
      continue;
    }
    const label = `${box.account.name}${box.account.isReadOnly ? " (read only)" : ""}`;
    groups.push(
      el(
        "li",
        { role: "treeitem", "aria-level": "1", "aria-expanded": "true", class: "account", "data-account": box.accountId },
        el("span", { class: "account-name", text: label }),
        el("ul", { role: "group" }, ...box.items(current, 2)),
      ),
    );
  }
  $("mailbox-list").replaceChildren(...groups);
  const open = app.mailboxes;
  $("move-to").replaceChildren(
    el("option", { value: "", text: "Move to…" }),
    ...(open ? open.ordered() : [])
      .filter(({ m }) => !m.myRights || m.myRights.mayAddItems)
      .map(({ m, depth }) => el("option", { value: m.id, text: "\u00a0\u00a0".repeat(depth) + m.name })),
  );
  const own = app.accounts.get(app.client.primaryId);
  const inbox = own ? own.byRole("inbox") : null;
  const unread = inbox ? inbox.unreadEmails : 0;
  document.title = `${unread ? `(${unread}) ` : ""}${app.list.title()} — jmapmono`;
}
