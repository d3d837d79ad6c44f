// Keyboard: j/k next/previous, Enter open, e archive, # delete, r reply, a reply all, f forward,
// s flag, u unread, c compose, / search, Escape back to the list.
export function bindKeys(app) {
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest("input, textarea, select, dialog[open]")) {
      if (event.key === "Escape" && target.id === "search") target.blur();
      return;
    }
    if (event.key === "Enter" && target.closest("button, a")) return;
    const list = app.list;
    const actions = {
      j: () => list.move(1),
      k: () => list.move(-1),
      Enter: () => list.selected >= 0 && list.select(list.selected, true),
      e: () => app.actions.archive(),
      "#": () => app.actions.remove(),
      r: () => app.reader.email && app.composer.open("reply"),
      a: () => app.reader.email && app.composer.open("replyAll"),
      f: () => app.reader.email && app.composer.open("forward"),
      s: () => app.actions.toggle("$flagged"),
      u: () => app.actions.toggle("$seen"),
      c: () => app.composer.open("new"),
      "/": () => document.getElementById("search").focus(),
      Escape: () => app.reader.close(),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });
}
