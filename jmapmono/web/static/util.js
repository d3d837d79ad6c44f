// Small helpers shared by the modules: elements, dates, sizes, addresses.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export const $ = (id) => document.getElementById(id);

export function shortDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.getFullYear() === now.getFullYear()) return d.toLocaleDateString([], { month: "short", day: "numeric" });
  return d.toLocaleDateString();
}

export const longDate = (iso) => (iso ? new Date(iso).toLocaleString() : "");

export function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(1)} GB`;
}

export const who = (a) => (a ? a.name || a.email : "");
export const addressList = (list) => (list || []).map((a) => (a.name ? `${a.name} <${a.email}>` : a.email)).join(", ");

// "Ann <ann@example.org>, bob@example.org" → [{name, email}]; throws on an address without "@".
export function parseAddresses(text) {
  const out = [];
  for (const raw of text.split(/[,;]/)) {
    const item = raw.trim();
    if (!item) continue;
    const m = item.match(/^(.*?)\s*<([^>]+)>$/);
    const email = (m ? m[2] : item).trim();
    if (!/^[^@\s]+@[^@\s]+$/.test(email)) throw new Error(`"${item}" is not an email address`);
    const name = m ? m[1].replace(/^"|"$/g, "").trim() : "";
    out.push(name ? { name, email } : { email });
  }
  return out;
}

export function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => node.classList.remove("shown"), 4000);
}
