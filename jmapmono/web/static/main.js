// The web inbox: log in, then mailboxes, list, reader and composer, kept live by one WebSocket.
import { AuthError, Client, logIn, savedLogin } from "./api.js";
import { Composer } from "./compose.js";
import { bindKeys } from "./keys.js";
import { MessageList } from "./list.js";
import { Mailboxes, renderMailboxes } from "./mailboxes.js";
import { Push } from "./push.js";
import { Reader } from "./reader.js";
import { $, toast } from "./util.js";

const app = {
  // The Mailboxes of each mail account (the user's own first), by account id.
  accounts: new Map(),
  // The open account's mailboxes.
  get mailboxes() {
    return this.client ? this.accounts.get(this.client.accountId) : undefined;
  },
  own() {
    return this.accounts.get(this.client.primaryId);
  },
};

class Actions {
  constructor(app) {
    this.app = app;
  }

  async set(update, done) {
    try {
      const result = await this.app.client.call("Email/set", update);
      const failed = Object.values(result.notUpdated || result.notDestroyed || {})[0];
      if (failed) throw new Error(failed.description || failed.type);
      if (done) toast(done);
    } catch (e) {
      if (!(e instanceof AuthError)) toast(`Not done: ${e.message}`);
    }
    app.sync();
  }

  keyword(ids, keyword, value) {
    for (const id of ids) {
      const e = app.list.emails.get(id);
      if (e) e.keywords = { ...e.keywords, [keyword]: value || undefined };
      if (app.reader.email && app.reader.email.id === id) app.reader.refresh({ ...app.reader.email, keywords: { ...app.reader.email.keywords, [keyword]: value || undefined } });
    }
    app.list.render();
    return this.set({ update: Object.fromEntries(ids.map((id) => [id, { [`keywords/${keyword}`]: value ? true : null }])) });
  }

  toggle(keyword) {
    const id = app.list.current();
    const e = id && (app.list.emails.get(id) || app.reader.email);
    if (!e) return;
    return this.keyword([id], keyword, !e.keywords[keyword]);
  }

  move(ids, mailboxId) {
    const name = app.mailboxes.byId.get(mailboxId)?.name || "the mailbox";
    this.leave(ids);
    return this.set({ update: Object.fromEntries(ids.map((id) => [id, { mailboxIds: { [mailboxId]: true } }])) }, `Moved to ${name}.`);
  }

  // Rows leaving the open list go at once; the next one is selected.
  leave(ids) {
    const list = app.list;
    const gone = new Set(ids);
    const index = list.selected;
    list.ids = list.ids.filter((id) => !gone.has(id));
    if (app.reader.emailId && gone.has(app.reader.emailId)) app.reader.close();
    list.selected = Math.min(index, list.ids.length - 1);
    list.render();
  }

  archive() {
    const id = app.list.current();
    const archive = app.mailboxes.byRole("archive");
    if (!id) return;
    if (!archive) return toast("There is no Archive mailbox.");
    return this.move([id], archive.id);
  }

  remove() {
    const id = app.list.current();
    if (!id) return;
    const trash = app.mailboxes.byRole("trash");
    if (trash && app.list.mailboxId !== trash.id) return this.move([id], trash.id);
    if (!confirm("Delete this message for good?")) return;
    this.leave([id]);
    return this.set({ destroy: [id] }, "Deleted.");
  }

  async markAllRead() {
    const mailboxId = app.list.mailboxId;
    const max = app.client.session.capabilities["urn:ietf:params:jmap:core"].maxObjectsInSet || 500;
    for (let round = 0; round < 100; round++) {
      const found = await app.client.call("Email/query", { filter: { inMailbox: mailboxId, notKeyword: "$seen" }, limit: max });
      if (found.ids.length === 0) break;
      await app.client.call("Email/set", { update: Object.fromEntries(found.ids.map((id) => [id, { "keywords/$seen": true }])) });
    }
    toast("All marked read.");
    app.sync();
  }
}

// The Session's mail accounts, each with its mailboxes; accounts gone are dropped (the open one falls back
// to the user's own Inbox).
async function loadAccounts() {
  const wanted = app.client.mailAccounts();
  const next = new Map();
  for (const account of wanted) {
    const known = app.accounts.get(account.id);
    if (known) known.account = account;
    next.set(account.id, known || new Mailboxes(app, account));
  }
  app.accounts = next;
  await Promise.all([...next.values()].filter((box) => box.state === null).map((box) => box.load()));
}

let sessionStale = false;
async function refreshSession() {
  sessionStale = false;
  const before = app.client.accountId;
  await app.client.connect();
  await loadAccounts();
  if (app.client.accountId !== before) {
    toast("That account is no longer shared with you.");
    app.list.emailState = null;
    const inbox = app.own().byRole("inbox");
    await app.list.open(inbox && inbox.id);
  }
  renderMailboxes(app);
}

// Bring everything up to date after a push (or a reconnect): */changes and Email/queryChanges, the open
// account's list and every account's mailboxes in one request. ``changed`` is the push's map, if any.
let syncing = false;
let again = false;
app.sync = async (changed = null) => {
  if (!app.client || !app.mailboxes) return;
  if (changed && Object.keys(changed).some((id) => !app.accounts.has(id))) sessionStale = true;
  if (syncing) {
    again = true;
    return;
  }
  syncing = true;
  let rounds = 0;
  try {
    do {
      again = false;
      if (sessionStale) await refreshSession();
      const others = [...app.accounts.values()].filter((box) => box !== app.mailboxes);
      const calls = [...app.mailboxes.changeCalls(), ...app.list.changeCalls(app.client.accountId), app.own().quotaCall()];
      others.forEach((box, i) => calls.push(...box.changeCalls(`a${i}.`)));
      const out = await app.client.request(calls);
      const gone = (answer) => answer && answer.error === "accountNotFound";
      if (gone(out.mc) || gone(out.ec)) {
        sessionStale = true; // the open account was taken back
        again = true;
        continue;
      }
      const mailboxesDone = app.mailboxes.applyChanges(out);
      if (!out.mc || out.mc.error) await app.mailboxes.load();
      let othersDone = true;
      for (const [i, box] of others.entries()) {
        if (gone(out[`a${i}.mc`])) sessionStale = true;
        else if (!box.applyChanges(out, `a${i}.`)) othersDone = false;
      }
      const listDone = app.list.applyChanges(out);
      if (!out.ec || out.ec.error || (app.list.queryState && (!out.qc || out.qc.error))) {
        app.list.emailState = null;
        await app.list.open(app.list.mailboxId, app.list.search);
      }
      if (out.eg && !out.eg.error) for (const e of out.eg.list) app.reader.refresh(e);
      renderMailboxes(app);
      app.own().showQuota(out.qq);
      if (!mailboxesDone || !listDone || !othersDone || sessionStale) again = true;
    } while (again && ++rounds < 10); // a change that cannot be followed waits for the next push
  } catch (e) {
    if (!(e instanceof AuthError)) toast(`Sync failed: ${e.message}`);
  } finally {
    syncing = false;
  }
};

app.render = () => renderMailboxes(app);

app.openMailbox = async (id, accountId = app.client.accountId) => {
  app.reader.close();
  $("search").value = "";
  document.body.classList.remove("menu-open");
  $("menu-toggle").setAttribute("aria-expanded", "false");
  if (accountId !== app.client.accountId) {
    app.client.accountId = accountId;
    app.list.emailState = null; // another account's states
  }
  await app.list.open(id);
  renderMailboxes(app);
  $("message-list").focus();
};

function showLogin(message = "") {
  if (app.push) app.push.stop();
  app.client = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  document.title = "Log in — jmapmono";
  $("login-email").focus();
}

async function start(login) {
  app.client = new Client(login.token, showLogin);
  app.list = new MessageList(app);
  app.reader = new Reader(app);
  app.composer = new Composer(app);
  app.actions = new Actions(app);
  app.accounts = new Map();
  app.client.onSessionChanged = () => {
    sessionStale = true;
  };
  try {
    await app.client.connect();
    await loadAccounts();
  } catch (e) {
    if (!(e instanceof AuthError)) showLogin(e.message);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  const inbox = app.own().byRole("inbox") || [...app.own().byId.values()][0];
  await app.list.open(inbox && inbox.id);
  renderMailboxes(app);
  performance.mark("jmapmono:first-rows"); // what bench/inbox_first_paint.py reads
  app.own().loadQuota();
  app.push = new Push(app.client, (changed) => app.sync(changed), (status) => {
    $("conn").textContent = { live: "● live", connecting: "○ connecting", offline: "○ offline" }[status];
    $("conn").dataset.status = status;
  });
  app.push.start();
}

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = $("login-email").value.trim();
    const password = $("login-password").value;
    if (!email || !password) {
      $("login-error").textContent = "Enter your email and password.";
      return;
    }
    $("login-submit").disabled = true;
    $("login-error").textContent = "";
    try {
      const login = await logIn(email, password);
      $("login-password").value = "";
      await start(login);
    } catch (e) {
      $("login-error").textContent = e.message;
    } finally {
      $("login-submit").disabled = false;
    }
  });
  $("logout").addEventListener("click", async () => {
    const client = app.client;
    if (app.push) app.push.stop();
    if (client) await client.logOut();
    showLogin("You are logged out; this browser's app password is revoked.");
  });
  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("search").value.trim();
    app.reader.close();
    await app.list.open(app.list.mailboxId, text);
    renderMailboxes(app);
    $("message-list").focus();
  });
  $("compose-button").addEventListener("click", () => app.composer.open("new"));
  $("mark-all-read").addEventListener("click", () => app.actions.markAllRead());
  $("back").addEventListener("click", () => app.reader.close());
  $("menu-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("menu-open");
    $("menu-toggle").setAttribute("aria-expanded", String(open));
  });
  $("move-to").addEventListener("change", (event) => {
    const target = event.target.value;
    event.target.value = "";
    if (target && app.reader.emailId) app.actions.move([app.reader.emailId], target);
  });
  for (const button of document.querySelectorAll("[data-act]")) {
    button.addEventListener("click", () => {
      const act = button.dataset.act;
      if (act === "reply" || act === "replyAll" || act === "forward") app.composer.open(act);
      else if (act === "flag") app.actions.toggle("$flagged");
      else if (act === "unread") app.actions.keyword([app.reader.emailId], "$seen", false);
      else if (act === "archive") app.actions.archive();
      else if (act === "delete") app.actions.remove();
    });
  }
  bindKeys(app);
}

wire();
const saved = savedLogin();
if (saved) start(saved);
else showLogin();
