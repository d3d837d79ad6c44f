// Compose, reply, reply-all, forward: a draft in Drafts, sent by EmailSubmission with the chosen Identity.
import { $, addressList, el, longDate, parseAddresses, toast } from "./util.js";

const prefixed = (prefix, subject) => (new RegExp(`^${prefix}:`, "i").test(subject || "") ? subject : `${prefix}: ${subject || ""}`);

export class Composer {
  constructor(app) {
    this.app = app;
    this.identities = null;
    this.draftId = null;
    this.reference = null;
    this.forwarded = [];
    $("compose-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    $("c-save").addEventListener("click", () => this.save());
    $("c-cancel").addEventListener("click", () => $("compose").close());
  }

  async loadIdentities() {
    if (this.identities) return;
    this.identities = (await this.app.client.call("Identity/get", { accountId: this.app.client.primaryId, ids: null })).list;
    $("c-from").replaceChildren(...this.identities.map((i) => el("option", { value: i.id, text: i.name ? `${i.name} <${i.email}>` : i.email })));
  }

  // mode: "new", "reply", "replyAll" or "forward" (of the open message).
  async open(mode = "new") {
    await this.loadIdentities();
    const original = mode === "new" ? null : this.app.reader.email;
    this.draftId = null;
    this.forwarded = [];
    this.reference = original;
    let to = [];
    let cc = [];
    let subject = "";
    let body = "";
    if (original) {
      const text = (original.textBody || []).map((p) => (original.bodyValues[p.partId] || {}).value || "").join("\n");
      const mine = new Set(this.identities.map((i) => i.email.toLowerCase()));
      if (mode === "forward") {
        subject = prefixed("Fwd", original.subject);
        body = `\n\n---------- Forwarded message ----------\nFrom: ${addressList(original.from)}\nDate: ${longDate(original.receivedAt)}\nSubject: ${original.subject || ""}\nTo: ${addressList(original.to)}\n\n${text}`;
        this.forwarded = await this.ownCopies(original.attachments || []);
      } else {
        subject = prefixed("Re", original.subject);
        to = original.replyTo && original.replyTo.length ? original.replyTo : original.from || [];
        if (mode === "replyAll") {
          const seen = new Set(to.map((a) => a.email.toLowerCase()));
          for (const a of [...(original.to || []), ...(original.cc || [])]) {
            const key = a.email.toLowerCase();
            if (!seen.has(key) && !mine.has(key)) {
              seen.add(key);
              cc.push(a);
            }
          }
        }
        const quoted = text.split("\n").map((line) => `> ${line}`).join("\n");
        body = `\n\nOn ${longDate(original.receivedAt)}, ${addressList(original.from)} wrote:\n${quoted}`;
      }
    }
    $("compose-title").textContent = { new: "New message", reply: "Reply", replyAll: "Reply all", forward: "Forward" }[mode];
    $("c-to").value = addressList(to);
    $("c-cc").value = addressList(cc);
    $("c-subject").value = subject;
    $("c-body").value = body;
    $("c-attachments").textContent = this.forwarded.length ? `Attached: ${this.forwarded.map((p) => p.name || "attachment").join(", ")}` : "";
    $("c-error").textContent = "";
    $("compose").showModal();
    (to.length ? $("c-body") : $("c-to")).focus();
    if (to.length) $("c-body").setSelectionRange(0, 0);
  }

  // Attachments of a message in another account (shared with the user) copied into the user's own, where the
  // draft is written (Blob/copy, RFC 8620 §6.3); those that cannot be copied are left out, and said so.
  async ownCopies(parts) {
    const from = this.app.client.accountId;
    const to = this.app.client.primaryId;
    if (from === to || parts.length === 0) return parts;
    const out = await this.app.client.request([["Blob/copy", { fromAccountId: from, accountId: to, blobIds: parts.map((p) => p.blobId) }, "b"]]);
    const copied = out.b && !out.b.error ? out.b.copied || {} : {};
    const kept = parts.filter((p) => copied[p.blobId]).map((p) => ({ ...p, blobId: copied[p.blobId] }));
    if (kept.length < parts.length) toast(`${parts.length - kept.length} attachment(s) could not be attached.`);
    return kept;
  }

  // The Email/set create arguments of the draft as the form stands.
  draft() {
    const drafts = this.app.own().byRole("drafts");
    if (!drafts) throw new Error("There is no Drafts mailbox.");
    const identity = this.identities.find((i) => i.id === $("c-from").value);
    const email = {
      mailboxIds: { [drafts.id]: true },
      keywords: { $draft: true, $seen: true },
      from: [identity.name ? { name: identity.name, email: identity.email } : { email: identity.email }],
      to: parseAddresses($("c-to").value),
      cc: parseAddresses($("c-cc").value),
      subject: $("c-subject").value,
      bodyValues: { body: { value: $("c-body").value } },
      textBody: [{ partId: "body", type: "text/plain" }],
    };
    if (this.forwarded.length) {
      email.attachments = this.forwarded.map((p) => ({ blobId: p.blobId, type: p.type, name: p.name, disposition: "attachment" }));
    }
    const original = this.reference;
    if (original && original.messageId && !$("compose-title").textContent.startsWith("Forward")) {
      email.inReplyTo = original.messageId;
      email.references = [...(original.references || []), ...original.messageId];
    }
    return { email, identity, drafts };
  }

  // Replace the previous draft (if any) by the form's content; the calls and the new draft's reference.
  draftCalls() {
    const { email, identity, drafts } = this.draft();
    const accountId = this.app.client.primaryId; // mail is written from the user's own account
    const set = { accountId, create: { draft: email } };
    if (this.draftId) set.destroy = [this.draftId];
    return { calls: [["Email/set", set, "d"]], identity, drafts };
  }

  async save() {
    try {
      const { calls } = this.draftCalls();
      const out = await this.app.client.request(calls);
      const created = out.d.created && out.d.created.draft;
      if (!created) throw new Error(this.refusal(out.d));
      this.draftId = created.id;
      toast("Draft saved.");
      $("compose").close();
    } catch (e) {
      $("c-error").textContent = e.message;
    }
  }

  refusal(result) {
    if (result.error) return result.description;
    const notCreated = result.notCreated && Object.values(result.notCreated)[0];
    return notCreated ? notCreated.description || notCreated.type : "The server refused it.";
  }

  async send() {
    $("c-error").textContent = "";
    try {
      const { calls, identity, drafts } = this.draftCalls();
      if (!parseAddresses($("c-to").value).length && !parseAddresses($("c-cc").value).length) throw new Error("Add at least one recipient.");
      const sent = this.app.own().byRole("sent");
      const update = { [`mailboxIds/${drafts.id}`]: null, "keywords/$draft": null };
      if (sent) update[`mailboxIds/${sent.id}`] = true;
      calls.push([
        "EmailSubmission/set",
        { accountId: this.app.client.primaryId, create: { send: { identityId: identity.id, emailId: "#draft" } }, onSuccessUpdateEmail: { "#send": update } },
        "s",
      ]);
      $("c-send").disabled = true;
      const out = await this.app.client.request(calls);
      const created = out.d.created && out.d.created.draft;
      if (!created) throw new Error(this.refusal(out.d));
      this.draftId = created.id;
      if (!(out.s.created && out.s.created.send)) throw new Error(`Not sent: ${this.refusal(out.s)} (kept in Drafts)`);
      $("compose").close();
      toast("Message sent.");
    } catch (e) {
      $("c-error").textContent = e.message;
    } finally {
      $("c-send").disabled = false;
    }
  }
}
