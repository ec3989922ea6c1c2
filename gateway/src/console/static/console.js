// mcpgw console: the little JavaScript it has. Every form works without it; this adds copy
// buttons and the allowlist editor's live preview. Served from the gateway itself (the
// Content-Security-Policy allows no inline script and no other origin).
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.value !== undefined ? source.value : source.textContent;
  const done = () => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => selectIn(source));
  } else {
    selectIn(source);
  }
});

// Without the clipboard API (plain http off loopback): select the text for Ctrl-C.
function selectIn(element) {
  if (element.select) {
    element.select();
  } else {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
}

// The allowlist editor: each change asks the gateway which tools the draft would show.
const editor = document.getElementById("allowlist");
if (editor) {
  const preview = document.getElementById("preview");
  let timer = null;
  let asked = 0;
  const refresh = () => {
    const params = new URLSearchParams();
    for (const box of editor.querySelectorAll("input[name=pattern]:checked")) {
      params.append("pattern", box.value);
    }
    params.append("globs", editor.querySelector("textarea[name=globs]").value);
    const ask = ++asked;
    preview.setAttribute("aria-busy", "true");
    fetch(editor.dataset.preview + "?" + params.toString(), { credentials: "same-origin" })
      .then((r) => {
        // Signed out meanwhile: the answer is the sign-in page, which gets the whole window.
        if (r.redirected) {
          window.location.assign(r.url);
          return Promise.reject(r.status);
        }
        return r.ok ? r.text() : Promise.reject(r.status);
      })
      .then((html) => {
        if (ask !== asked) return;
        preview.innerHTML = html;
        preview.dataset.updated = String(ask);
      })
      .catch(() => {})
      .finally(() => preview.removeAttribute("aria-busy"));
  };
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  };
  editor.addEventListener("change", later);
  editor.addEventListener("input", (e) => { if (e.target.name === "globs") later(); });
}
