// ClassPulse "my view": a student's own signals, summary and explanation (GET .../participants/{p}/me).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const REGISTRY = JSON.parse($("signal-registry").textContent);
  const FLAGS = REGISTRY.outputs.filter((s) => s.kind === "flag" && s.badge_on !== null);
  const INPUTS = Object.fromEntries(REGISTRY.inputs.map((s) => [s.name, s.description]));
  const hash = new URLSearchParams(location.hash.slice(1));
  const params = new URLSearchParams(location.search);
  const get = (k) => hash.get(k) || params.get(k);
  const session = get("session");
  const participant = get("participant");
  const token = get("token");

  function status(state, text) {
    const el = $("status");
    el.className = "status " + state;
    el.textContent = text;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function renderNow(now) {
    const badges = $("badges");
    badges.replaceChildren();
    if (!now) { badges.append(el("span", "no signals yet", "muted")); return; }
    for (const s of FLAGS) {
      const on = Boolean(now[s.name]);
      if (!on && s.badge_off === null) continue;
      badges.append(el("span", on ? s.badge_on : s.badge_off, "badge " + (on ? "on" : "off")));
    }
    $("engagement-bar").style.width = Math.round(now.engagement * 100) + "%";
    $("engagement").textContent = "engagement " + now.engagement.toFixed(2) + " (confidence " + now.confidence.toFixed(2) + ")";
    const explain = $("explain");
    explain.replaceChildren();
    const parts = Object.entries(now.contributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 6);
    for (const [name, value] of parts) {
      const li = el("li", (value >= 0 ? "+" : "") + value.toFixed(2) + " " + name, value >= 0 ? "pos" : "neg");
      if (INPUTS[name]) li.title = INPUTS[name];
      explain.append(li);
    }
  }

  function renderSummary(s) {
    const body = $("summary").tBodies[0];
    body.replaceChildren();
    if (!s) { body.append(el("tr", "not enough of the session yet")); return; }
    const pct = (v) => Math.round(v * 100) + " %";
    const rows = [
      ["present", pct(s.present_ratio)], ["attentive", pct(s.attentive_ratio)],
      ["talk time", s.talk_time_s.toFixed(0) + " s"], ["speaking turns", s.turns],
      ["hand raises", s.hand_raises], ["questions", s.questions], ["messages", s.chat_messages],
      ["joined at", s.joined_at === null ? "—" : s.joined_at.toFixed(0) + " s" + (s.late ? " (late)" : "")],
    ];
    for (const [k, v] of rows) {
      const tr = el("tr");
      tr.append(el("th", k), el("td", String(v)));
      body.append(tr);
    }
  }

  function renderStrip(rows) {
    const canvas = $("strip");
    const w = canvas.width = canvas.clientWidth || 900;
    const h = canvas.height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!rows.length) return;
    const t0 = rows[0].t, t1 = rows[rows.length - 1].t + 1;
    const lanes = [["present", "#9ca3af"], ["attentive", "#2563eb"], ["speaking", "#1b873f"], ["hand_raised", "#f59e0b"]];
    const laneH = (h - 10) / lanes.length;
    const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * w;
    lanes.forEach(([name, color], i) => {
      ctx.fillStyle = "#f3f4f6";
      ctx.fillRect(0, 5 + i * laneH, w, laneH - 4);
      ctx.fillStyle = color;
      for (const r of rows) if (r[name]) ctx.fillRect(x(r.t), 5 + i * laneH, Math.max(1, x(r.t + 1) - x(r.t)), laneH - 4);
    });
  }

  function renderQuestions(items) {
    const list = $("questions");
    list.replaceChildren();
    if (!items.length) { list.append(el("li", "none yet", "muted")); return; }
    for (const q of items) {
      const text = q.text ? "“" + q.text + "”" : "(text not kept)";
      list.append(el("li", q.t.toFixed(0) + " s · " + q.kind + " · " + text + (q.on_topic === null ? "" : q.on_topic ? " · on topic" : " · off topic")));
    }
  }

  // The opt-out switch (privacy controls): PUT/DELETE .../participants/{p}/opt-out with the student's own token.
  const base = "/api/sessions/" + encodeURIComponent(session);
  const optOutUrl = base + "/participants/" + encodeURIComponent(participant) + "/opt-out";
  async function privacyControls() {
    const box = $("privacy-controls");
    let policy;
    try {
      const r = await fetch(base + "/privacy", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (!r.ok) { box.hidden = true; return; }
      policy = await r.json();
    } catch (e) { box.hidden = true; return; }
    const out = policy.opted_out.includes(participant);
    box.replaceChildren();
    box.hidden = false;
    box.dataset.optedOut = String(out);
    if (policy.aggregate_only) box.append(el("p", "This class is aggregate-only: only class figures are shown to anyone.", "muted"));
    box.append(el("p", out
      ? "You opted out: your camera and microphone are not analysed and you are shown only as “opted out”."
      : "You can opt out at any time: your media is then not analysed, and what was recorded about you is erased."));
    const button = el("button", out ? "Opt back in" : "Opt out of analysis");
    button.id = "opt-out";
    button.type = "button";
    button.addEventListener("click", async () => {
      if (!out && !confirm("Opt out? ClassPulse stops analysing your camera and microphone for this class.")) return;
      button.disabled = true;
      const r = await fetch(optOutUrl, { method: out ? "DELETE" : "PUT", headers: { Authorization: "Bearer " + token } });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) { box.append(el("p", body.error || "error " + r.status, "bad")); button.disabled = false; return; }
      await privacyControls();
      await refresh();
    });
    box.append(button);
  }

  async function refresh() {
    const url = "/api/sessions/" + encodeURIComponent(session) + "/participants/" + encodeURIComponent(participant) + "/me";
    try {
      const r = await fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      const body = await r.json();
      if (!r.ok) { status(r.status === 404 ? "connecting" : "down", body.error || "error " + r.status); return; }
      $("recorded").textContent = body.recorded;
      renderNow(body.now);
      renderSummary(body.summary);
      renderStrip(body.timeline);
      renderQuestions(body.questions);
      status("live", "updated " + new Date().toLocaleTimeString());
      document.dispatchEvent(new CustomEvent("classpulse:me", { detail: body }));
    } catch (e) {
      status("down", "ClassPulse is not reachable");
    }
  }

  if (!session || !participant || !token) {
    $("login").hidden = false;
    status("down", "no session");
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      location.hash = new URLSearchParams({ session: f.get("session"), participant: f.get("participant"), token: f.get("token") }).toString();
      location.reload();
    });
    return;
  }
  $("main").hidden = false;
  $("who").textContent = participant + " · " + session;
  privacyControls();
  refresh();
  setInterval(refresh, 3000);
})();
