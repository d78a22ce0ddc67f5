// The playground: speech and transcription through /playground/api, which serves the
// /v1 handlers with this browser's session (the same tier, limits, quotas and audit).
"use strict";

(() => {
  const API = "/playground/api";
  const { el, json, report } = VG;
  const $ = (id) => document.getElementById(id);
  let voices = [];
  let session = null;
  let objectUrl = null;

  function signedIn(s) {
    session = s;
    $("signin").hidden = true;
    $("play").hidden = false;
    $("signout").hidden = false;
    $("who").textContent = `key ${s.keyid} (tier ${s.tier})`;
    $("voice-form").hidden = !s.scopes.includes("voices.manage");
    $("transcribe-form").hidden = !s.scopes.includes("transcription");
    $("transcribe-title").hidden = !s.scopes.includes("transcription");
    loadCatalog();
  }

  function signedOut(err) {
    session = null;
    $("signin").hidden = false;
    $("play").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    report($("signin-error"), err || null);
  }

  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("signin-key");
    const key = input.value.trim();
    input.value = "";
    report($("signin-error"), null);
    try {
      signedIn(await VG.signIn(API, key));
    } catch (err) {
      report($("signin-error"), err);
    }
  });

  $("signout").addEventListener("click", async () => {
    try { await VG.signOut(API); } catch (_) { /* ended already */ }
    signedOut();
  });

  function failed(target, err) {
    if (err && err.status === 401) signedOut(err);
    else report(target, err);
  }

  // ---- models and voices ----
  async function loadCatalog() {
    report($("voices-error"), null);
    try {
      const [models, list] = await Promise.all([json("GET", `${API}/models`), json("GET", `${API}/voices`)]);
      voices = list.voices;
      const speaking = new Set(voices.flatMap((v) => v.models));
      const ids = models.data.map((m) => m.id);
      $("model").replaceChildren(...ids.filter((id) => speaking.has(id)).map((id) => el("option", { value: id }, id)));
      $("asr-model").replaceChildren(...ids.filter((id) => !speaking.has(id)).map((id) => el("option", { value: id }, id)));
      fillVoices();
      $("voices").tBodies[0].replaceChildren(...voices.map((v) => el("tr", {},
        el("td", {}, v.id), el("td", {}, v.language), el("td", {}, v.engine), el("td", {}, v.models.join(", ")))));
      $("stored").tBodies[0].replaceChildren(...(list.stored.length ? list.stored.map((v) => el("tr", {},
        el("td", {}, el("code", {}, v.id)), el("td", {}, v.name), el("td", { class: "num" }, v.duration.toFixed(1)),
        el("td", {}, session.scopes.includes("voices.manage")
          ? el("button", { type: "button", class: "danger", onclick: () => deleteVoice(v) }, "Delete") : null)))
        : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "none"))]));
    } catch (err) {
      failed($("voices-error"), err);
    }
  }

  function fillVoices() {
    const model = $("model").value;
    const was = $("voice").value;
    const usable = voices.filter((v) => v.models.includes(model));
    $("voice").replaceChildren(...usable.map((v) => el("option", { value: v.id }, `${v.name || v.id} (${v.language})`)));
    if (usable.some((v) => v.id === was)) $("voice").value = was;
  }

  $("model").addEventListener("change", fillVoices);

  async function deleteVoice(v) {
    if (!confirm(`Delete the stored voice ${v.name} (${v.id})?`)) return;
    try {
      await json("DELETE", `${API}/voices/${encodeURIComponent(v.id)}`);
      await loadCatalog();
    } catch (err) {
      failed($("voices-error"), err);
    }
  }

  $("voice-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    report($("voices-error"), null);
    const form = new FormData();
    form.append("name", $("voice-name").value);
    form.append("consent", $("voice-consent").checked ? "true" : "false");
    form.append("audio_sample", $("voice-file").files[0]);
    try {
      await json("POST", `${API}/voices`, form);
      $("voice-form").reset();
      await loadCatalog();
    } catch (err) {
      failed($("voices-error"), err);
    }
  });

  // ---- speech ----
  const TYPES = { mp3: "audio/mpeg", wav: "audio/wav", opus: "audio/ogg", flac: "audio/flac" };

  // MP3 is played while it arrives (Media Source Extensions); the other formats once whole.
  async function play(response, format) {
    const audio = $("audio");
    const type = TYPES[format];
    const chunks = [];
    const reader = response.body.getReader();
    const streamed = format === "mp3" && window.MediaSource && MediaSource.isTypeSupported(type);
    audio.dataset.streamed = streamed ? "true" : "false";
    if (streamed) {
      const source = new MediaSource();
      setSource(URL.createObjectURL(source));
      await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
      const buffer = source.addSourceBuffer(type);
      const appended = () => new Promise((resolve) => buffer.addEventListener("updateend", resolve, { once: true }));
      let started = false;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        buffer.appendBuffer(value);
        await appended();
        if (!started) {
          started = true;
          audio.play().catch(() => { /* the user presses play */ });
        }
      }
      source.endOfStream();
    } else {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
      }
      setSource(URL.createObjectURL(new Blob(chunks, { type })));
      audio.play().catch(() => { /* the user presses play */ });
    }
    const link = $("download");
    link.href = URL.createObjectURL(new Blob(chunks, { type }));
    link.download = `speech.${format}`;
    link.textContent = `Download speech.${format}`;
    link.hidden = false;
  }

  function setSource(url) {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = url;
    $("audio").src = url;
  }

  $("speak-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    report($("speak-error"), null);
    $("download").hidden = true;
    $("speak-status").textContent = "Speaking…";
    $("speak").disabled = true;
    const format = $("format").value;
    try {
      const response = await VG.request("POST", `${API}/speech`, {
        model: $("model").value,
        voice: $("voice").value,
        input: $("text").value,
        response_format: format,
        speed: Number($("speed").value),
      });
      const engine = response.headers.get("x-voxgate-engine");
      await play(response, format);
      $("speak-status").textContent = engine ? `Spoken by ${engine}.` : "Done.";
    } catch (err) {
      $("speak-status").textContent = "";
      failed($("speak-error"), err);
    } finally {
      $("speak").disabled = false;
    }
  });

  // ---- transcription ----
  async function transcribe(file) {
    report($("transcribe-error"), null);
    $("transcribe-status").textContent = "Transcribing…";
    const form = new FormData();
    form.append("file", file);
    form.append("model", $("asr-model").value);
    try {
      const result = await json("POST", `${API}/transcriptions`, form);
      $("transcript").value = result.text;
      $("transcribe-status").textContent = "Done.";
    } catch (err) {
      $("transcribe-status").textContent = "";
      failed($("transcribe-error"), err);
    }
  }

  $("transcribe-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const file = $("upload").files[0];
    if (!file) {
      report($("transcribe-error"), new Error("Choose an audio file first."));
      return;
    }
    transcribe(file);
  });

  let recorder = null;
  $("record").addEventListener("click", async () => {
    report($("transcribe-error"), null);
    try {
      // WebM/Opus where the browser records it, else Ogg/Opus or MP4 (all accepted uploads).
      const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"]
        .find((t) => MediaRecorder.isTypeSupported(t));
      if (!type) throw new Error("This browser cannot record audio in a format the server takes.");
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const parts = [];
      const extension = type.startsWith("audio/webm") ? "webm" : type.startsWith("audio/ogg") ? "ogg" : "m4a";
      recorder = new MediaRecorder(stream, { mimeType: type });
      recorder.addEventListener("dataavailable", (e) => parts.push(e.data));
      recorder.addEventListener("stop", () => {
        stream.getTracks().forEach((t) => t.stop());
        transcribe(new File(parts, `recording.${extension}`, { type: type.split(";")[0] }));
      });
      recorder.start();
      $("record").disabled = true;
      $("stop").disabled = false;
      $("transcribe-status").textContent = "Recording…";
    } catch (err) {
      report($("transcribe-error"), err);
    }
  });

  $("stop").addEventListener("click", () => {
    if (recorder) recorder.stop();
    recorder = null;
    $("record").disabled = false;
    $("stop").disabled = true;
  });

  VG.resume(API).then((s) => (s ? signedIn(s) : signedOut()))
    .catch((err) => report($("signin-error"), err));
})();
