// The staff desk's only script: the editor's live preview and the copy buttons.
// Served from the desk itself (CSP: script-src 'self'); every page works without it.
"use strict";

function csrfToken(form) {
  const field = form && form.querySelector('input[name="csrf"]');
  return field ? field.value : "";
}

function livePreview(textarea) {
  const target = document.getElementById(textarea.dataset.livePreview);
  if (!target) return;
  let timer = null;
  let sent = 0;
  const update = () => {
    const ticket = ++sent;
    const body = new FormData();
    body.append("csrf", csrfToken(textarea.form));
    body.append("body", textarea.value);
    fetch("/desk/live-preview", { method: "POST", body, credentials: "same-origin" })
      .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
      .then((html) => {
        if (ticket === sent) target.innerHTML = html; // sanitised on the server, like every post
      })
      .catch(() => {});
  };
  textarea.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(update, 300);
  });
  if (textarea.value.trim()) update();
}

function copyButton(button) {
  button.addEventListener("click", () => {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const label = button.textContent;
    const done = (words) => {
      button.textContent = words;
      setTimeout(() => (button.textContent = label), 2000);
    };
    if (navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent).then(() => done("Copied"), () => done("Select the text to copy it"));
    } else {
      done("Select the text to copy it");
    }
  });
}

document.querySelectorAll("textarea[data-live-preview]").forEach(livePreview);
document.querySelectorAll("button[data-copy]").forEach(copyButton);
