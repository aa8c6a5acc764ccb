// ClassPulse student join page: camera/mic preview and WHIP publishing (RFC 9725), no CDN.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;  // .../join/join.js
  const stateEl = $("state");
  let pc = null;
  let stream = null;
  let resourceUrl = null;

  function show(state, text) {
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  // Fill the form from ?session=&participant=&token= (or #token=, kept out of server logs).
  const params = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.slice(1));
  for (const key of ["session", "participant", "token"]) {
    const value = hash.get(key) || params.get(key);
    if (value) $(key).value = value;
  }

  // "See what is recorded about you": the student's own view (/me), same token, in the fragment.
  function linkMyView() {
    const q = new URLSearchParams({ session: $("session").value, participant: $("participant").value, token: $("token").value });
    $("my-view").href = "/me#" + q.toString();
  }
  for (const key of ["session", "participant", "token"]) $(key).addEventListener("input", linkMyView);
  linkMyView();

  function whipUrl(session, participant) {
    const base = document.body.dataset.whipBase || "/whip/";
    return new URL(base + encodeURIComponent(session) + "/" + encodeURIComponent(participant), location.href);
  }

  function waitForIce(conn, timeoutMs) {
    if (conn.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { conn.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (conn.iceGatheringState === "complete") done(); };
      conn.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs);
    });
  }

  async function cameraLimits() {
    // the server's analysed frame rate and bitrate cap (GET /join/config.json); none if it cannot say
    try {
      const response = await fetch(new URL("config.json", SCRIPT_URL));
      if (!response.ok) return {};
      const config = await response.json();
      const limits = {};
      if (config.camera_fps) limits.maxFramerate = config.camera_fps;
      if (config.camera_kbps) limits.maxBitrate = config.camera_kbps * 1000;
      return limits;
    } catch (err) {
      return {};
    }
  }

  async function start(event) {
    event.preventDefault();
    const session = $("session").value.trim();
    const participant = $("participant").value.trim();
    const token = $("token").value.trim();
    $("start").disabled = true;
    try {
      const camera = await cameraLimits();
      show("media", "Asking for camera and microphone…");
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } },
        audio: true,
      });
      $("preview").srcObject = stream;
      pc = new RTCPeerConnection({ iceServers: [] });
      for (const track of stream.getTracks()) {
        const init = { direction: "sendonly", streams: [stream] };
        if (track.kind === "video") {
          // only what the analysis uses leaves the browser: fewer frames and packets for the server to receive
          init.sendEncodings = [camera];
        }
        pc.addTransceiver(track, init);
      }
      pc.addEventListener("connectionstatechange", () => {
        const s = pc.connectionState;
        show(s, s === "connected" ? "Connected — you are in class" : "Connection: " + s);
      });
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 3000);
      show("connecting", "Connecting…");
      const url = whipUrl(session, participant);
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + token },
        body: pc.localDescription.sdp,
      });
      const text = await response.text();
      if (response.status !== 201) {
        throw new Error("server said " + response.status + ": " + text.trim());
      }
      resourceUrl = new URL(response.headers.get("Location"), url);
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      $("stop").disabled = false;
      $("stop").dataset.token = token;
    } catch (err) {
      show("error", "Could not join: " + (err && err.message ? err.message : err));
      await stop();
    }
  }

  async function stop() {
    const token = $("stop").dataset.token || $("token").value.trim();
    if (resourceUrl) {
      try {
        await fetch(resourceUrl, { method: "DELETE", headers: { "Authorization": "Bearer " + token } });
      } catch (err) { /* the server ends the session when the connection drops */ }
      resourceUrl = null;
    }
    if (pc) { pc.close(); pc = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    $("start").disabled = false;
    $("stop").disabled = true;
    if (stateEl.dataset.state !== "error") show("idle", "Not connected");
  }

  // ---------- chat: interaction events posted under the student's own token ----------
  let chatSeq = 0;
  const chatRun = Math.random().toString(36).slice(2, 10);
  function apiUrl(session) {
    const base = document.body.dataset.apiBase || "/api/sessions/";
    return new URL(base + encodeURIComponent(session) + "/interactions", location.href);
  }
  function chatState(state, text) {
    const s = $("chat-state");
    s.dataset.state = state;
    s.textContent = text;
  }
  async function sendChat(event) {
    event.preventDefault();
    const text = $("chat-text").value.trim();
    const session = $("session").value.trim();
    const participant = $("participant").value.trim();
    const token = $("token").value.trim();
    if (!text) return;
    if (!session || !participant || !token) { chatState("error", "Fill in session, your id and token first"); return; }
    const asked = $("chat-question").checked;
    const item = {
      event_id: "join-" + participant + "-" + chatRun + "-" + (++chatSeq),
      participant: participant, role: "student", kind: asked ? "question" : "chat",
      ts: Date.now() / 1000, source: "join_page", text: text,
    };
    const li = el("li", asked ? "question" : "", text);
    $("chat-log").append(li);
    $("chat-send").disabled = true;
    try {
      const response = await fetch(apiUrl(session), {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
        body: JSON.stringify([item]),
      });
      if (response.status !== 202) {
        let message = "server said " + response.status;
        try {
          const body = await response.json();
          message = body.error + (body.items && body.items.length ? ": " + body.items.join("; ") : "");
        } catch (err) { /* not JSON */ }
        throw new Error(message);
      }
      li.dataset.state = "sent";
      $("chat-text").value = "";
      $("chat-question").checked = false;
      chatState("sent", "Sent");
    } catch (err) {
      li.classList.add("failed");
      li.dataset.state = "failed";
      chatState("error", "Not sent: " + (err && err.message ? err.message : err));
    } finally {
      $("chat-send").disabled = false;
    }
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    node.textContent = text;
    return node;
  }

  $("chat-form").addEventListener("submit", sendChat);
  $("form").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  window.addEventListener("pagehide", stop);
  window.classpulseJoin = { stop };
})();
