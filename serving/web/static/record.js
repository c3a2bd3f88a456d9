// Recording page: consent form → prompt → record with MediaRecorder → upload (multipart) → next prompt.
// The server decides everything (validation, QC); this script only moves data and shows its answers.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = { token: null, prompt: null, blob: null, submissionId: null, recorder: null, chunks: [], count: 0 };

  function newSubmissionId() {
    // One id per take: a retried upload of the same take reuses it, so the server stores it once.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function status(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "";
  }

  function detailText(body) {
    const d = body && body.detail;
    if (!d) return "unexpected answer from the server";
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return d.message || JSON.stringify(d);
  }

  function showPrompt(prompt) {
    state.prompt = prompt;
    state.blob = null;
    $("upload").disabled = true;
    $("preview").hidden = true;
    if (!prompt) {
      $("record-step").hidden = true;
      $("done-step").hidden = false;
      return;
    }
    $("prompt").textContent = prompt.text;
    $("prompt").dataset.promptId = prompt.id;
  }

  async function post(url, data) {
    const response = await fetch(url, { method: "POST", body: data, headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { status: response.status, ok: response.ok, body };
  }

  $("consent-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const errors = $("consent-errors");
    errors.replaceChildren();
    $("consent-submit").disabled = true;
    const answer = await post("/record/consent", new URLSearchParams(new FormData(event.target)));
    $("consent-submit").disabled = false;
    if (!answer.ok) {
      const problems = (answer.body && answer.body.detail && answer.body.detail.problems) || [detailText(answer.body)];
      for (const p of problems) {
        const li = document.createElement("li");
        li.textContent = p;
        errors.append(li);
      }
      return;
    }
    state.token = answer.body.token;
    $("reference").textContent = answer.body.reference;
    if (answer.body.environment) $("environment").value = answer.body.environment;
    $("consent-step").hidden = true;
    $("record-step").hidden = false;
    showPrompt(answer.body.prompt);
  });

  $("record").addEventListener("click", async () => {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      status(`No microphone: ${e.message}. Allow microphone access and try again.`, "error");
      return;
    }
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find(
      (t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t));
    state.chunks = [];
    state.recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    state.recorder.ondataavailable = (e) => { if (e.data.size) state.chunks.push(e.data); };
    state.recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      state.blob = new Blob(state.chunks, { type: state.recorder.mimeType || "audio/webm" });
      state.submissionId = newSubmissionId();
      $("preview").src = URL.createObjectURL(state.blob);
      $("preview").hidden = false;
      $("upload").disabled = false;
      status("Recorded. Listen back if you like, then upload.");
    };
    state.recorder.start();
    $("record").disabled = true;
    $("stop").disabled = false;
    $("upload").disabled = true;
    status("Recording… say the sentence, then press Stop.", "recording");
  });

  $("stop").addEventListener("click", () => {
    if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
    $("stop").disabled = true;
    $("record").disabled = false;
  });

  $("upload").addEventListener("click", async () => {
    if (!state.blob || !state.prompt) return;
    const data = new FormData();
    data.append("token", state.token);
    data.append("submission_id", state.submissionId);
    data.append("prompt_id", state.prompt.id);
    data.append("environment", $("environment").value);
    const ext = (state.blob.type.split("/")[1] || "webm").split(";")[0];
    data.append("audio", state.blob, `take.${ext}`);
    $("upload").disabled = true;
    status("Uploading…");
    let answer;
    try {
      answer = await post("/record/upload", data);
    } catch (e) {
      $("upload").disabled = false;  // same take, same submission id: retrying is safe
      status(`Upload failed (${e.message}); press Upload to try again.`, "error");
      return;
    }
    if (answer.ok) {
      state.count += 1;
      $("count").textContent = String(state.count);
      status(`Saved ✓ (${answer.body.recording_id}). Next one:`, "ok");
      showPrompt(answer.body.next_prompt);
      return;
    }
    if (answer.status === 401) {
      status("Your session expired: reload the page and give consent again.", "error");
    } else {
      status(`Not saved: ${detailText(answer.body)}. Please record again.`, "error");
    }
  });

  $("skip").addEventListener("click", async () => {
    const data = new URLSearchParams({ token: state.token, skip: state.prompt ? state.prompt.id : "" });
    const answer = await post("/record/prompt", data);
    if (answer.ok) showPrompt(answer.body.prompt);
    else status(detailText(answer.body), "error");
  });
})();
