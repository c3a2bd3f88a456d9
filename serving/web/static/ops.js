// VOC inbox actions: send a complaint to labeling, or close it, through the ops VOC API (/ops/api/voc).
// The page is server-rendered; this only posts and then shows the new status (or the server's reason).
"use strict";

const notice = document.getElementById("voc-notice");

function say(text, bad) {
  notice.hidden = false;
  notice.textContent = text;  // textContent: a server message is shown as text, never parsed as HTML
  notice.className = bad ? "error" : "notice";
}

async function act(button) {
  const item = button.closest(".voc-item");
  const id = item.dataset.id;
  const action = button.dataset.action;
  const request = action === "label"
    ? { url: `/ops/api/voc/${encodeURIComponent(id)}/label`, body: null }
    : { url: `/ops/api/voc/${encodeURIComponent(id)}/status`, body: JSON.stringify({ status: "closed", note: "closed from the inbox" }) };
  button.disabled = true;
  try {
    const r = await fetch(request.url, {
      method: "POST", credentials: "same-origin",
      headers: request.body ? { "Content-Type": "application/json", Accept: "application/json" } : { Accept: "application/json" },
      body: request.body,
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || r.statusText);
      say(`${id}: ${detail}`, true);
      button.disabled = false;
      return;
    }
    const fb = data.feedback || data;
    const status = fb.status || (action === "close" ? "closed" : item.dataset.status);
    item.dataset.status = status;
    const badge = item.querySelector(".status");
    badge.textContent = status;
    badge.className = `status status-${status}`;
    item.querySelectorAll(".voc-action").forEach((b) => { b.disabled = true; });
    say(action === "label" ? `${id}: label task ${data.label_task_id} queued (priority ${data.priority})` : `${id}: closed`, false);
  } catch (e) {
    say(`${id}: ${e}`, true);
    button.disabled = false;
  }
}

document.querySelectorAll(".voc-action").forEach((b) => b.addEventListener("click", () => act(b)));
