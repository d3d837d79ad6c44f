// The reading pane: text as text; HTML cleaned by the server, shown in a frame that runs no script.
import { $, addressList, el, longDate, size, toast } from "./util.js";
import { LIST_PROPS } from "./list.js";

const BODY_PROPS = ["partId", "blobId", "size", "name", "type", "charset", "disposition", "cid"];
const READ_PROPS = [...LIST_PROPS, "cc", "bcc", "replyTo", "sentAt", "messageId", "inReplyTo", "references", "textBody", "htmlBody", "attachments", "bodyValues"];
// The frame's own policy (on top of the page's, which it inherits): nothing but inline images and styles.
const FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
const FRAME_STYLE = "body{font:15px/1.45 system-ui,sans-serif;margin:12px;color:#1b1b1b;word-wrap:break-word;overflow-wrap:anywhere}img{max-width:100%;height:auto}pre{white-space:pre-wrap}";

function escapeAttr(text) {
  return text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export class Reader {
  constructor(app) {
    this.app = app;
    this.emailId = null;
    this.email = null;
    this.images = false;
    $("show-images").addEventListener("click", () => {
      this.images = true;
      this.renderBody();
    });
  }

  close() {
    this.emailId = null;
    this.email = null;
    $("reader").hidden = true;
    document.body.classList.remove("reading");
  }

  async open(id) {
    this.emailId = id;
    this.images = false;
    const result = await this.app.client.call("Email/get", {
      ids: [id],
      properties: READ_PROPS,
      bodyProperties: BODY_PROPS,
      fetchTextBodyValues: true,
    });
    if (this.emailId !== id) return;
    const email = result.list[0];
    if (!email) {
      toast("This message no longer exists.");
      this.close();
      return;
    }
    this.email = email;
    $("reader").hidden = false;
    document.body.classList.add("reading");
    $("reader-subject").textContent = email.subject || "(no subject)";
    $("reader-from").textContent = `From: ${addressList(email.from)}`;
    $("reader-to").textContent = [email.to && `To: ${addressList(email.to)}`, email.cc && `Cc: ${addressList(email.cc)}`].filter(Boolean).join("  ·  ");
    $("reader-date").textContent = longDate(email.receivedAt);
    this.renderFlags();
    this.renderAttachments();
    await this.renderBody();
    this.app.list.render();
    if (!email.keywords.$seen && this.maySetSeen(email)) this.app.actions.keyword([id], "$seen", true);
  }

  // RFC 8621 §2: $seen may be set only with maySetSeen in every mailbox of the email (a read-only share has not).
  maySetSeen(email) {
    return Object.keys(email.mailboxIds || {}).every((id) => {
      const m = this.app.mailboxes.byId.get(id);
      return !m || !m.myRights || m.myRights.maySetSeen;
    });
  }

  renderFlags() {
    const flagged = !!(this.email && this.email.keywords.$flagged);
    $("flag-button").setAttribute("aria-pressed", String(flagged));
    $("flag-button").textContent = flagged ? "Unflag" : "Flag";
  }

  // Keep the open message's keywords and mailboxes in step with the list's copy after a change.
  refresh(email) {
    if (!this.email || email.id !== this.email.id) return;
    this.email = { ...this.email, keywords: email.keywords, mailboxIds: email.mailboxIds };
    this.renderFlags();
  }

  async renderBody() {
    const email = this.email;
    const body = $("reader-body");
    const html = (email.htmlBody || []).find((p) => p.type === "text/html");
    $("images-bar").hidden = true;
    if (html) {
      const cleaned = await this.app.client.cleanHtml(html, this.images);
      if (this.email !== email) return;
      if (!cleaned.error) {
        const frame = el("iframe", { class: "mail-frame", title: "Message body", "data-email": email.id, sandbox: "allow-popups allow-popups-to-escape-sandbox", referrerpolicy: "no-referrer" });
        const inline = await this.inlineImages(cleaned.html);
        const csp = FRAME_CSP + (this.images ? " https: http:" : "");
        frame.srcdoc = `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${csp}"><style>${FRAME_STYLE}</style></head><body>${inline}</body></html>`;
        body.replaceChildren(frame);
        $("images-bar").hidden = !(cleaned.blocked > 0 && !this.images);
        return;
      }
      body.replaceChildren(el("p", { class: "error", text: `The HTML of this message cannot be shown (${cleaned.error}); its text follows.` }));
    } else {
      body.replaceChildren();
    }
    const text = (email.textBody || [])
      .filter((p) => p.type.startsWith("text/"))
      .map((p) => (email.bodyValues[p.partId] || {}).value || "")
      .join("\n\n");
    body.append(el("pre", { class: "mail-text", text }));
  }

  // cid: images of the message's own parts become data: URLs (the frame may load nothing else).
  async inlineImages(html) {
    const parts = [...(this.email.attachments || []), ...(this.email.htmlBody || [])].filter((p) => p.cid && p.type.startsWith("image/"));
    if (!html.includes('src="cid:') || parts.length === 0) return html;
    const urls = new Map();
    for (const part of parts) {
      try {
        urls.set(part.cid.replace(/^<|>$/g, ""), await dataUrl(await this.app.client.download(part.blobId, part.name, part.type)));
      } catch {
        // an image that cannot be fetched stays a broken image
      }
    }
    return html.replace(/src="cid:([^"]*)"/g, (whole, cid) => {
      const url = urls.get(cid.replace(/&amp;/g, "&"));
      return url ? `src="${escapeAttr(url)}"` : 'src=""';
    });
  }

  renderAttachments() {
    const list = $("attachments");
    const parts = (this.email.attachments || []).filter((p) => p.disposition !== "inline" || !p.cid);
    list.replaceChildren(
      ...parts.map((p) =>
        el(
          "li",
          {},
          el("button", { type: "button", class: "attachment", text: `${p.name || "attachment"} (${size(p.size)})`, "aria-label": `Download ${p.name || "attachment"}, ${size(p.size)}`, onclick: () => this.save(p) }),
        ),
      ),
    );
  }

  async save(part) {
    try {
      const blob = await this.app.client.download(part.blobId, part.name, part.type);
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: part.name || "attachment" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      toast(`Download failed: ${e.message}`);
    }
  }
}
