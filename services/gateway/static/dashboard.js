// ClassPulse teacher dashboard: one WebSocket feed, no libraries, no build step.
// Messages: {kind: "snapshot", state} then {kind: "score"|"aggregate"|"alert"|"lifecycle"|"interaction"|"privacy", event}.
"use strict";

(function () {
  // ?session=S&token=T, or #token=T (a fragment never reaches server logs).
  const params = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.slice(1));
  const session = hash.get("session") || params.get("session");
  const token = hash.get("token") || params.get("token");
  const $ = (id) => document.getElementById(id);
  // Behaviour signals come from the signal registry (shared/signals.py), rendered into the page.
  const REGISTRY = JSON.parse($("signal-registry").textContent);
  const FLAGS = REGISTRY.outputs.filter((s) => s.kind === "flag" && s.badge_on !== null);
  const STATE_FLAGS = FLAGS.filter((s) => s.badge_off !== null);  // a badge either way: present / away
  const EVENT_FLAGS = FLAGS.filter((s) => s.badge_off === null);  // a badge only while true: hand raised
  const STALE_S = 5;
  const MAX_POINTS = 180;
  const MAX_LATENCIES = 300;

  const state = {
    participants: new Map(),  // id -> latest score event
    roster: new Map(),        // id -> latest lifecycle event (joined, left, camera_off ...)
    counts: new Map(),        // id -> {questions, chat_messages, words_spoken} (totals from the server)
    handsSince: new Map(),    // id -> first time the hand was seen raised (fallback queue)
    aggregate: null,
    seenAggregates: new Set(),
    points: [],               // [window.end, engagement_mean, attentive_ratio]
    talk: new Map(),          // id -> {role, seconds}
    alerts: new Map(),        // participant/kind -> alert
    latencies: [],            // capture -> dashboard, seconds
    stageSums: new Map(),     // stage/hop name -> [sum, n]
    questions: new Map(),     // event_id -> {event_id, participant, role, text, answered, at}
    dismissed: new Set(),     // question ids the teacher marked done (this page only)
    optedOut: new Set(),      // participants who opted out: shown only as "opted out"
    aggregateOnly: false,     // class figures only (no tiles)
  };
  const MAX_QUESTIONS = 200;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---------- latency from the timing trail ----------
  // Student signals (scores) measure capture -> dashboard; class aggregates are emitted when
  // their window closes, so their delay (window end -> dashboard) is shown on its own line.
  function observeAggregateDelay(timing) {
    if (!timing) return;
    addStage("class aggregate: window end → dashboard", Date.now() / 1000 - timing.capture_ts);
  }
  function observeTiming(timing) {
    if (!timing) return;
    const now = Date.now() / 1000;
    state.latencies.push(now - timing.capture_ts);
    if (state.latencies.length > MAX_LATENCIES) state.latencies.shift();
    let prevEmit = timing.capture_ts;
    let prevName = "capture";
    for (const s of timing.stages || []) {
      addStage(prevName + " → " + s.stage, s.received - prevEmit);
      addStage(s.stage, s.emitted - s.received);
      prevEmit = s.emitted;
      prevName = s.stage;
    }
    addStage(prevName + " → dashboard", now - prevEmit);
  }
  function addStage(name, seconds) {
    const cur = state.stageSums.get(name) || [0, 0];
    state.stageSums.set(name, [cur[0] + Math.max(0, seconds), cur[1] + 1]);
  }
  function quantile(sorted, q) {
    if (!sorted.length) return NaN;
    const idx = Math.min(sorted.length - 1, Math.floor(q * sorted.length));
    return sorted[idx];
  }
  function renderLatency() {
    const sorted = [...state.latencies].sort((a, b) => a - b);
    const ms = (v) => (Number.isFinite(v) ? Math.round(v * 1000) : "–");
    $("lat-p50").textContent = ms(quantile(sorted, 0.5));
    $("lat-p95").textContent = ms(quantile(sorted, 0.95));
    $("lat-n").textContent = String(sorted.length);
    const body = $("stages").querySelector("tbody");
    body.replaceChildren();
    for (const [name, [sum, n]] of state.stageSums) {
      const tr = el("tr");
      tr.append(el("td", "", name), el("td", "", (1000 * sum / n).toFixed(1)));
      body.append(tr);
    }
  }

  // ---------- students ----------
  function applyScore(e) {
    state.participants.set(e.participant, e);
    if (e.hand_raised && !state.handsSince.has(e.participant)) state.handsSince.set(e.participant, e.media_time);
    if (!e.hand_raised) state.handsSince.delete(e.participant);
  }
  function badge(label, on) {
    return el("span", "badge " + (on ? "on" : "off"), label);
  }
  function applyLifecycle(e) {
    if (e.kind === "session_ended") return;
    const cur = state.roster.get(e.participant);
    if (!cur || cur.ts <= e.ts) state.roster.set(e.participant, e);
  }
  // Interaction totals come with each live "interaction" message (and the snapshot's rows): set, never add.
  function applyCounts(id, c) {
    if (c) state.counts.set(id, { questions: c.questions || 0, chat_messages: c.chat_messages || 0, words_spoken: c.words_spoken || 0 });
  }
  // ---------- question queue ----------
  // Questions come with the snapshot (state.questions, oldest first) and as live "interaction"
  // messages whose event asks something; a reply (reply_to) marks one answered.
  function applyQuestion(q) {
    const cur = state.questions.get(q.event_id);
    state.questions.set(q.event_id, { ...q, answered: Boolean(q.answered || (cur && cur.answered)) });
    while (state.questions.size > MAX_QUESTIONS) state.questions.delete(state.questions.keys().next().value);
  }
  function applyInteraction(e) {
    if (e.reply_to && state.questions.has(e.reply_to)) state.questions.get(e.reply_to).answered = true;
    const asks = e.kind === "question" || ((e.kind === "chat" || e.kind === "answer") && e.is_question);
    if (asks) applyQuestion({ event_id: e.event_id, participant: e.participant, role: e.role, text: e.text, answered: false });
  }
  function renderQuestions() {
    const list = $("questions");
    const all = [...state.questions.values()];
    const open = all.filter((q) => q.role === "student" && !q.answered && !state.dismissed.has(q.event_id));
    $("question-count").textContent = open.length ? "(" + open.length + " open)" : "";
    list.replaceChildren();
    if (!open.length) list.append(el("li", "muted", "no open questions"));
    for (const q of open) {
      const li = el("li", "question");
      li.dataset.eventId = q.event_id;
      li.append(el("span", "who", q.participant + ": "));
      li.append(q.text ? el("span", "text", q.text) : el("span", "muted", "(question — text not kept)"));
      const done = el("button", "done", "done");
      done.type = "button";
      done.title = "remove from the queue";
      done.addEventListener("click", () => { state.dismissed.add(q.event_id); renderQuestions(); });
      li.append(done);
      list.append(li);
    }
    const students = all.filter((q) => q.role === "student").length;
    const teacher = all.filter((q) => q.role === "teacher").length;
    const a = state.aggregate;
    $("question-figures").textContent = "questions: students " + students + " · teacher " + teacher +
      (a && a.response_latency_s != null ? " · first student response " + a.response_latency_s.toFixed(1) + " s" : "");
  }

  function textLine(id) {
    const c = state.counts.get(id) || { questions: 0, chat_messages: 0, words_spoken: 0 };
    const line = el("div", "text-activity", "chat " + c.chat_messages + " · questions " + c.questions);
    line.dataset.chatMessages = String(c.chat_messages);
    line.dataset.questions = String(c.questions);
    return line;
  }
  function joiningTile(id, life) {
    const tile = el("div", "tile stale");
    tile.dataset.participant = id;
    tile.dataset.present = "unknown";
    const name = el("div", "name", id);
    if (life) name.append(el("span", "role", life.role));
    const badges = el("div", "badges");
    if (life) badges.append(badge(life.kind === "left" ? "left" : "joined — waiting for the first signals", life.kind !== "left"));
    else badges.append(badge("chat only — no camera or microphone yet", false));
    tile.append(name, badges, textLine(id));
    return tile;
  }
  function optedOutTile(id) {
    const tile = el("div", "tile stale opted-out");
    tile.dataset.participant = id;
    tile.dataset.optedOut = "true";
    tile.append(el("div", "name", id), el("div", "badges"));
    tile.lastChild.append(badge("opted out", false));
    return tile;
  }
  function applyPrivacy(e) {
    if (e.kind === "aggregate_only") state.aggregateOnly = !!e.aggregate_only;
    if (!e.participant) return;
    if (e.kind === "opted_out") {
      state.optedOut.add(e.participant);
      state.participants.delete(e.participant);
      state.counts.delete(e.participant);
    } else if (e.kind === "opted_in") state.optedOut.delete(e.participant);
  }
  function renderTiles() {
    const box = $("tiles");
    if (state.aggregateOnly) {
      box.replaceChildren(el("div", "muted aggregate-only", "Aggregate-only session: class figures only, no student rows."));
      $("count").textContent = "";
      return;
    }
    const ids = [...new Set([...state.participants.keys(), ...state.roster.keys(), ...state.counts.keys(),
      ...state.optedOut])].sort();
    $("count").textContent = ids.length ? "(" + ids.length + ")" : "";
    if (!ids.length) return;
    box.replaceChildren();
    const now = Date.now() / 1000;
    for (const id of ids) {
      if (state.optedOut.has(id)) { box.append(optedOutTile(id)); continue; }
      const e = state.participants.get(id);
      const life = state.roster.get(id);
      if (!e) { box.append(joiningTile(id, life)); continue; }
      const tile = el("div", "tile");
      const left = life && life.kind === "left" && life.ts >= e.timing.capture_ts;
      if (left) tile.classList.add("stale");
      tile.dataset.participant = id;
      tile.dataset.present = String(e.present);
      if (!e.present) tile.classList.add("absent");
      if (now - (e.receivedAt || now) > STALE_S) tile.classList.add("stale");
      const name = el("div", "name", id);
      name.append(el("span", "role", e.role));
      const badges = el("div", "badges");
      for (const s of STATE_FLAGS) badges.append(badge(e[s.name] ? s.badge_on : s.badge_off, e[s.name]));
      if (left) badges.append(badge("left", false));
      for (const s of EVENT_FLAGS) if (e[s.name]) badges.append(badge(s.badge_on, true));
      if (e.camera_on === false) badges.append(badge("camera off", false));
      if (e.mic_on === false) badges.append(badge("mic muted", false));
      const eng = el("div", "engagement", "engagement " + Math.round(e.engagement * 100) + "%");
      eng.dataset.value = String(e.engagement);
      const meter = el("div", "meter");
      const fill = el("div");
      fill.style.width = Math.round(e.engagement * 100) + "%";
      meter.append(fill);
      const explain = el("ul", "explain");
      const contribs = Object.entries(e.contributions || {}).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
      for (const [signal, value] of contribs.slice(0, 4)) {
        explain.append(el("li", value >= 0 ? "pos" : "neg", (value >= 0 ? "+" : "−") + Math.abs(value).toFixed(2) + " " + signal));
      }
      tile.append(name, badges, eng, meter, textLine(id), explain);
      box.append(tile);
    }
  }

  // ---------- class ----------
  function applyAggregate(a) {
    if (state.seenAggregates.has(a.event_id)) return;
    state.seenAggregates.add(a.event_id);
    state.aggregate = a;
    state.points.push([a.window.end, a.engagement_mean, a.attentive_ratio]);
    state.points.sort((x, y) => x[0] - y[0]);
    if (state.points.length > MAX_POINTS) state.points.shift();
    for (const [id, p] of Object.entries(a.participants || {})) {
      const cur = state.talk.get(id) || { role: p.role, seconds: 0 };
      cur.seconds += p.talk_time_s;
      cur.role = p.role;
      state.talk.set(id, cur);
    }
  }
  function renderTimeline() {
    const canvas = $("timeline");
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#e5e7eb";
    for (const y of [0.25, 0.5, 0.75]) {
      ctx.beginPath(); ctx.moveTo(0, h - y * h); ctx.lineTo(w, h - y * h); ctx.stroke();
    }
    const pts = state.points;
    if (pts.length < 1) return;
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    const line = (idx, color) => {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      pts.forEach((p, i) => {
        const x = ((p[0] - t0) / (t1 - t0)) * (w - 4) + 2, y = h - p[idx] * (h - 4) - 2;
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    line(2, "#a7f3d0");
    line(1, "#2563eb");
    ctx.fillStyle = "#2563eb";
    const last = pts[pts.length - 1];
    const lx = ((last[0] - t0) / (t1 - t0)) * (w - 4) + 2, ly = h - last[1] * (h - 4) - 2;
    ctx.beginPath(); ctx.arc(lx, ly, 3, 0, 2 * Math.PI); ctx.fill();
    const a = state.aggregate;
    $("class-figures").textContent =
      "engagement " + Math.round(a.engagement_mean * 100) + "% · attentive " + Math.round(a.attentive_ratio * 100) +
      "% · present " + a.participants_present + "/" + a.participants_total +
      (a.wait_time_s != null ? " · wait time " + a.wait_time_s.toFixed(1) + " s" : "");
  }
  function renderTalk() {
    const box = $("talk");
    const rows = [...state.talk.entries()].sort((a, b) => b[1].seconds - a[1].seconds);
    const total = rows.reduce((s, r) => s + r[1].seconds, 0);
    if (!rows.length || total <= 0) return;
    const teacher = rows.filter((r) => r[1].role === "teacher").reduce((s, r) => s + r[1].seconds, 0);
    $("teacher-share").textContent = "teacher " + Math.round((100 * teacher) / total) + "%";
    const max = rows[0][1].seconds;
    box.replaceChildren();
    for (const [id, t] of rows) {
      const row = el("div", "row");
      const bar = el("div", "bar" + (t.role === "teacher" ? " teacher" : ""));
      bar.style.width = Math.max(2, Math.round((100 * t.seconds) / max)) + "%";
      const holder = el("div");
      holder.append(bar);
      row.append(el("span", "", id), holder, el("span", "muted", t.seconds.toFixed(0) + " s"));
      box.append(row);
    }
  }
  function renderHands() {
    const list = $("hands");
    let queue = state.aggregate ? [...state.aggregate.hand_queue] : [];
    const derived = [...state.handsSince.entries()].sort((a, b) => a[1] - b[1]).map((x) => x[0]);
    for (const id of derived) if (!queue.includes(id)) queue.push(id);
    queue = queue.filter((id) => !state.participants.has(id) || state.participants.get(id).hand_raised);
    list.replaceChildren();
    if (!queue.length) { list.append(el("li", "muted", "none")); return; }
    for (const id of queue) list.append(el("li", "", id));
  }
  function applyAlert(a) {
    state.alerts.set((a.participant || "*") + "/" + a.kind, a);
  }
  function renderAlerts() {
    const list = $("alerts");
    const items = [...state.alerts.values()].sort((a, b) => b.at - a.at).slice(0, 12);
    list.replaceChildren();
    if (!items.length) { list.append(el("li", "muted", "none")); return; }
    for (const a of items) list.append(el("li", a.state, a.message));
  }

  function renderAll() {
    renderTiles(); renderTimeline(); renderTalk(); renderQuestions(); renderHands(); renderAlerts(); renderLatency();
  }

  // ---------- feed ----------
  function handle(msg) {
    const now = Date.now() / 1000;
    if (msg.kind === "snapshot") {
      for (const p of msg.state.participants) {
        applyScore({ ...p, receivedAt: now, media_time: p.media_time });
        applyCounts(p.participant, p);
      }
      if (msg.state.aggregate) applyAggregate(msg.state.aggregate);
      for (const a of msg.state.alerts) applyAlert(a);
      for (const l of msg.state.lifecycle || []) applyLifecycle(l);
      for (const q of msg.state.questions || []) applyQuestion(q);
      state.aggregateOnly = !!msg.state.aggregate_only;
      for (const id of msg.state.opted_out || []) applyPrivacy({ kind: "opted_out", participant: id });
    } else if (msg.kind === "privacy") {
      applyPrivacy(msg.event);
    } else if (msg.kind === "score") {
      if (state.optedOut.has(msg.event.participant)) return;
      observeTiming(msg.event.timing);
      applyScore({ ...msg.event, receivedAt: now });
    } else if (msg.kind === "aggregate") {
      observeAggregateDelay(msg.event.timing);
      applyAggregate(msg.event);
    } else if (msg.kind === "alert") {
      applyAlert(msg.event);
    } else if (msg.kind === "lifecycle") {
      applyLifecycle(msg.event);
    } else if (msg.kind === "interaction") {
      applyCounts(msg.event.participant, msg.counts);
      applyInteraction(msg.event);
    }
  }

  let dirty = false;
  function schedule() {
    if (!dirty) { dirty = true; requestAnimationFrame(() => { dirty = false; renderAll(); }); }
  }

  function setStatus(kind, text) {
    const s = $("feed-status");
    s.className = "status " + kind;
    s.textContent = text;
    document.body.classList.toggle("disconnected", kind !== "live");
  }

  let retry = 0;
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = proto + "//" + location.host + "/api/sessions/" + encodeURIComponent(session) + "/ws?token=" + encodeURIComponent(token);
    const ws = new WebSocket(url);
    ws.onopen = () => { retry = 0; setStatus("live", "live"); };
    ws.onmessage = (ev) => { handle(JSON.parse(ev.data)); schedule(); };
    ws.onclose = (ev) => {
      if (ev.code === 1008 || ev.code === 4401 || ev.code === 4403) {
        setStatus("down", "access denied — check the token");
        return;
      }
      const delay = Math.min(10, 0.5 * 2 ** retry++);
      setStatus("down", "feed disconnected — reconnecting in " + delay.toFixed(1) + " s");
      setTimeout(connect, delay * 1000);
    };
  }

  async function preload() {
    try {
      const r = await fetch("/api/sessions/" + encodeURIComponent(session) + "/aggregates?limit=" + MAX_POINTS, {
        headers: { Authorization: "Bearer " + token },
      });
      if (r.status === 401 || r.status === 403) { setStatus("down", "access denied — check the token"); return false; }
      if (r.ok) for (const a of (await r.json()).aggregates) applyAggregate(a);
    } catch (err) { /* the feed reconnect loop reports connectivity */ }
    return true;
  }

  if (!session || !token) {
    $("login").hidden = false;
    $("main").hidden = true;
    setStatus("down", "no session");
    return;
  }
  $("session-name").textContent = session;
  setInterval(schedule, 1000);  // ages tiles to "stale" when the feed goes quiet
  preload().then((ok) => { if (ok) { schedule(); connect(); } });
})();
