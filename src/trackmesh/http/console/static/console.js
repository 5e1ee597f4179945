// trackmesh console: a small script, no build step, no dependency.
// Every name (room, peer, track) goes into the page as text (textContent), never as markup.
"use strict";

(function () {
  const state = { session: null, rooms: [], unanswered: [], stale: null, roomsAt: 0, stream: null, armed: null,
    cluster: null, actionAt: 0, heads: new Map(), appOf: new Map() };
  const view = () => document.getElementById("view");

  // ---- DOM helpers: text only -------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "onclick") node.addEventListener("click", v);
      else if (k.startsWith("data-") || k === "href" || k === "type" || k === "title" || k === "role" ||
               k === "name" || k === "value" || k === "placeholder" || k === "for" || k === "id" ||
               k === "inputmode" || k === "aria-label" || k === "download") node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function setStatus(text, bad) {
    const s = document.getElementById("status");
    s.textContent = text || "";
    s.className = bad ? "bad" : "";
  }

  // An action's outcome stays shown for a while: the next live push does not wipe it.
  function actionStatus(text, bad) {
    setStatus(text, bad);
    state.actionAt = Date.now();
  }

  function when(ms) {
    if (ms === null || ms === undefined) return "";
    const d = new Date(Number(ms));
    return d.toLocaleString();
  }

  // The cluster secret's session on the console role sees every app: a room's actions and a
  // session's timeline name the app they are about (?app=); any other session has one app.
  function appQuery(app, sep) {
    if (!state.session || !state.session.all_apps || app === undefined || app === null) return "";
    return (sep || "?") + "app=" + encodeURIComponent(app);
  }

  function appLabel(app) {
    return app === "" ? "(default app)" : "app " + app;
  }

  function sessionLink(id, app) {
    return el("a", { href: "#/session/" + encodeURIComponent(id) + appQuery(app), class: "session", "data-session-link": id }, id);
  }

  // The cluster operator's app choice for the event log views (Events, Peers): a select of every app.
  function appSelect(params) {
    if (!state.session.all_apps) return null;
    const sel = el("select", { name: "app", "aria-label": "app", id: "app-select" });
    for (const a of state.session.apps || [""]) {
      const o = el("option", { value: a }, appLabel(a));
      if ((params.get("app") || "") === a) o.selected = true;
      sel.append(o);
    }
    return el("label", {}, "App ", sel);
  }

  // ---- API --------------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = {};
    if (method !== "GET") headers["X-CSRF-Token"] = state.session ? state.session.csrf : "";
    const resp = await fetch(path, { method, headers, credentials: "same-origin", body });
    if (resp.status === 401) {
      location.reload(); // the session ended: back to the login form
      throw new Error("logged out");
    }
    const json = await resp.json().catch(() => ({ status: false, error: "HTTP " + resp.status }));
    if (!resp.ok || json.status === false) throw new Error(json.error || "HTTP " + resp.status);
    return json.data;
  }

  // A two-step button: the first click arms it, the second (within 4 s) acts.
  function actionButton(label, confirmLabel, attrs, act) {
    const b = el("button", Object.assign({ type: "button", class: "danger" }, attrs), label);
    b.addEventListener("click", async () => {
      if (state.armed !== b) {
        if (state.armed) state.armed.textContent = state.armed.dataset.label;
        state.armed = b;
        b.dataset.label = label;
        b.textContent = confirmLabel;
        setTimeout(() => { if (state.armed === b) { state.armed = null; b.textContent = label; } }, 4000);
        return;
      }
      state.armed = null;
      b.disabled = true;
      try {
        const r = await act();
        actionStatus(r);
        b.disabled = false; // a room's buttons outlive the action (kept across pushes)
        b.textContent = label;
      } catch (e) {
        actionStatus(String(e.message || e), true);
        b.disabled = false;
        b.textContent = label;
      }
    });
    return b;
  }

  function kickButton(session) {
    return actionButton("Kick", "Confirm kick", { "data-action": "kick", "data-session": session }, async () => {
      await api("POST", "/api/console/sessions/" + encodeURIComponent(session) + "/kick");
      return "Kicked session " + session + ".";
    });
  }

  // ---- views --------------------------------------------------------------------------------------

  function kbps(bps) {
    return bps === null || bps === undefined ? null : (bps >= 1e6 ? (bps / 1e6).toFixed(2) + " Mbps" : Math.round(bps / 1000) + " kbps");
  }

  // Who receives a published track, and the codec a received one carries (no transcoding: its
  // source's), from every live row (all workers and nodes of the listing).
  function published(peer, name) {
    for (const r of state.rooms) for (const p of r.peers) {
      if (p.peer !== peer) continue;
      for (const t of p.tracks || []) if (t.direction === "publish" && t.name === name) return t;
    }
    return null;
  }

  function subscribers(source) {
    let n = 0;
    for (const r of state.rooms) for (const p of r.peers) for (const t of p.tracks || []) {
      if (t.direction === "subscribe" && t.source === source) n++;
    }
    return n;
  }

  function muteButton(session, t) {
    const action = t.muted ? "unmute" : "mute";
    const label = t.muted ? "Unmute" : "Mute";
    return actionButton(label, "Confirm: " + action, { "data-action": action, "data-track": t.name }, async () => {
      await api("POST", "/api/console/sessions/" + encodeURIComponent(session) + "/tracks/" + encodeURIComponent(t.name) + "/" + action);
      return (t.muted ? "Unmuted " : "Muted ") + t.name + ": its viewers " + (t.muted ? "receive it again." : "no longer receive it.");
    });
  }

  function trackList(tracks, peer, session) {
    if (!tracks || !tracks.length) return el("span", { class: "muted" }, "no tracks");
    const ul = el("ul", { class: "tracks" });
    for (const t of tracks) {
      const bits = [t.direction === "publish" ? "publishes" : "receives", t.kind, t.name];
      if (t.source) bits.push("from " + t.source);
      const src = t.direction === "publish" ? t : (t.source ? published(t.source.slice(0, t.source.lastIndexOf("/")), t.source.slice(t.source.lastIndexOf("/") + 1)) : null);
      if (src && src.codec) bits.push(src.codec);
      if (kbps(t.bitrate_bps)) bits.push(kbps(t.bitrate_bps));
      if (t.simulcast && t.simulcast.length) bits.push("simulcast " + t.simulcast.join("/"));
      if (t.layer) bits.push("layer S" + t.layer.spatial + " T" + t.layer.temporal);
      if (t.direction === "publish" && peer !== null && peer !== undefined) {
        const n = subscribers(peer + "/" + t.name);
        bits.push(n + (n === 1 ? " subscriber" : " subscribers"));
      }
      if (t.muted) bits.push("MUTED by the operator");
      bits.push(t.packets + " packets");
      if (t.direction === "subscribe") {
        bits.push("loss " + (100 * (t.loss || 0)).toFixed(1) + " %");
        if (t.rtt_ms !== null && t.rtt_ms !== undefined) bits.push("RTT " + t.rtt_ms + " ms");
        bits.push("jitter " + t.jitter_ms + " ms");
      }
      const li = el("li", { "data-track": t.name }, bits.join(" · "));
      if (t.direction === "publish" && session !== undefined) li.append(" ", muteButton(session, t));
      ul.append(li);
    }
    return ul;
  }

  function peerRow(p) {
    return el("tr", { "data-session": p.session, "data-peer": p.peer === null ? "" : p.peer },
      el("td", { "data-label": "Peer" }, el("a", { href: "#/session/" + encodeURIComponent(p.session), class: "peer" },
        p.peer === null ? "(no peer yet)" : p.peer)),
      el("td", { "data-label": "Transport" }, p.transport + (p.node !== undefined ? " @ zone " + p.zone + " node " + p.node : "")),
      el("td", { "data-label": "State" }, p.connected ? "connected" : "connecting"),
      el("td", { "data-label": "Tracks" }, trackList(p.tracks, p.peer, p.session)),
      el("td", { "data-label": "" }, kickButton(p.session)));
  }

  // A room's heading and buttons, kept across pushes (the same nodes: a click never lands on a
  // replaced button); only its peer count changes.
  function roomHead(r) {
    const key = r.room === null ? "" : "r:" + (r.app || "") + "\n" + r.room;
    let head = state.heads.get(key);
    if (!head) {
      head = buildRoomHead(r);
      state.heads.set(key, head);
    }
    head.querySelector(".peer-count").textContent = r.peers.length + " peer(s)";
    return [key, head];
  }

  function renderRooms() {
    const v = view();
    v.replaceChildren();
    v.append(el("h2", {}, "Live rooms"));
    const used = new Set();
    for (const r of state.rooms) {
      const [key, head] = roomHead(r);
      used.add(key);
      const table = el("table", { class: "peers" },
        el("thead", {}, el("tr", {}, el("th", {}, "Peer"), el("th", {}, "Transport"), el("th", {}, "State"),
          el("th", {}, "Tracks"), el("th", {}, ""))),
        el("tbody", {}, ...r.peers.map(peerRow)));
      v.append(el("section", { class: "room", "data-room": r.room === null ? "" : r.room, "data-app": r.app }, head, table));
    }
    for (const key of [...state.heads.keys()]) if (!used.has(key)) state.heads.delete(key);
    if (!state.rooms.length) {
      v.append(el("p", { class: "muted", id: "no-rooms" }, "No live room. Rooms appear here as peers join (pushed, no refresh needed)."));
    }
  }

  function buildRoomHead(r) {
    const name = r.room === null ? "(not in a room yet)" : r.room;
    const head = el("div", { class: "room-head" },
      el("h3", {}, name), state.session.all_apps && r.room !== null ? el("span", { class: "app-name" }, appLabel(r.app)) : null,
      el("span", { class: "muted peer-count" }));
    if (r.room !== null && (state.session.role === "standalone" || state.session.role === "console")) {
      for (const [action, label] of [["start", "Record"], ["stop", "Stop recording"]]) {
        const b = el("button", { type: "button", "data-action": "record-" + action }, label);
        b.addEventListener("click", async () => {
          try {
            await api("POST", "/api/console/rooms/" + encodeURIComponent(r.room) + "/record/" + action + appQuery(r.app));
            actionStatus(action === "start" ? "Recording the room (files under Recordings)." : "Recording stopped: its files are finalised.");
          } catch (e) { actionStatus(String(e.message || e), true); }
        });
        head.append(b);
      }
    }
    if (r.room !== null) {
      head.append(actionButton("End room", "Confirm: end room", { "data-action": "end-room" }, async () => {
        const d = await api("POST", "/api/console/rooms/" + encodeURIComponent(r.room) + "/end" + appQuery(r.app));
        return "Ended the room: " + d.kicked + " peer(s) kicked.";
      }));
    }
    return head;
  }

  function liveSession(id) {
    for (const r of state.rooms) for (const p of r.peers) if (p.session === id) return [r, p];
    return null;
  }

  // The connector's DisconnectReason (atm0s numbering, connector/events.py).
  const REASONS = {
    0: "the client left (closed its connection or sent DELETE)",
    1: "timeout: the client stopped answering (connect timeout, ICE consent or media timeout)",
    2: "the media node shut down",
    3: "kicked by an operator or the API",
    4: "its media node was lost",
  };

  function explain(ev) {
    let meta = {};
    try { meta = ev.meta ? JSON.parse(ev.meta) : {}; } catch (e) { meta = {}; }
    const parts = [];
    for (const [k, v] of Object.entries(meta)) parts.push(k + ": " + (typeof v === "object" ? JSON.stringify(v) : v));
    let why = null;
    if (ev.event === "Disconnected" && meta.reason !== undefined) why = REASONS[meta.reason] || String(meta.reason);
    if (ev.event === "RouteError") why = "routing failed" + (meta.reason !== undefined ? ": " + meta.reason : "");
    return [parts.join(", "), why];
  }

  async function renderSession(id, params) {
    const v = view();
    v.replaceChildren(el("h2", {}, "Session ", id));
    const live = liveSession(id);
    if (live) {
      const [r, p] = live;
      v.append(el("p", { id: "live-state" }, "Live: peer ", el("strong", {}, p.peer === null ? "(none)" : p.peer),
        " in room ", el("strong", {}, r.room === null ? "(none)" : r.room), " over ", p.transport,
        p.connected ? " (connected)" : " (connecting)", " ", kickButton(id)));
      v.append(trackList(p.tracks, p.peer, p.session));
    } else {
      v.append(el("p", { id: "live-state", class: "muted" }, "Not live on this node (ended, or not started yet)."));
    }
    v.append(el("h3", {}, "Timeline (connector events)"));
    const box = el("div", { id: "timeline" }, "Loading...");
    v.append(box);
    try {
      // A tenant's session: that app's connector rows (from the live view, else the link's ?app=).
      const app = live ? live[1].app : (state.appOf.has(id) ? state.appOf.get(id) : params.get("app"));
      const rows = await api("GET", "/api/console/events?limit=500&session=" + encodeURIComponent(id) + appQuery(app, "&"));
      box.replaceChildren();
      if (!rows.length) { box.append(el("p", { class: "muted" }, "No event logged for this session yet.")); return; }
      let reason = null;
      const ol = el("ol", { class: "timeline" });
      for (const ev of rows) {
        const [details, why] = explain(ev);
        if (why) reason = why;
        ol.append(el("li", { "data-event": ev.event }, el("time", {}, when(ev.created_at)), " ",
          el("strong", {}, ev.event), details ? " " + details : "", why ? el("em", {}, " - " + why) : null));
      }
      if (reason) box.append(el("p", { class: "reason", id: "end-reason" }, "Why it ended: ", el("strong", {}, reason)));
      box.append(ol);
    } catch (e) {
      box.replaceChildren(el("p", { class: "bad" }, String(e.message || e)));
    }
  }

  async function renderPeers(params) {
    const v = view();
    v.replaceChildren(el("h2", {}, "Peers (event log, newest first)"));
    const choice = appSelect(params);
    if (choice) {
      choice.querySelector("select").addEventListener("change", (e) => {
        location.hash = "#/peers?" + new URLSearchParams({ app: e.target.value }).toString();
      });
      v.append(el("p", { class: "filters" }, choice));
    }
    const box = el("div", {}, "Loading...");
    v.append(box);
    const app = params.get("app");
    try {
      const peers = await api("GET", "/api/console/peers?limit=100" + appQuery(app, "&"));
      box.replaceChildren();
      if (!peers.length) { box.append(el("p", { class: "muted" }, "No peer logged yet.")); return; }
      const tbody = el("tbody");
      for (const p of peers) {
        const sessions = el("ul", { class: "sessions" });
        for (const s of p.sessions) {
          sessions.append(el("li", {}, sessionLink(s.session, app), " joined ", when(s.joined_at),
            s.leaved_at ? " · left " + when(s.leaved_at) : " · still in"));
        }
        tbody.append(el("tr", { "data-peer": p.peer }, el("td", { "data-label": "Room" }, p.room),
          el("td", { "data-label": "Peer" }, p.peer), el("td", { "data-label": "Sessions" }, sessions)));
      }
      box.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Room"), el("th", {}, "Peer"),
        el("th", {}, "Sessions"))), tbody));
    } catch (e) {
      box.replaceChildren(el("p", { class: "bad" }, String(e.message || e)));
    }
  }

  const EVENT_NAMES = ["", "Connecting", "Connected", "Disconnected", "Join", "Leave", "RemoteTrackStarted",
    "RemoteTrackEnded", "LocalTrack", "LocalTrackAttach", "LocalTrackDetach", "RouteBegin", "RouteSuccess", "RouteError"];

  async function renderEvents(params) {
    const v = view();
    v.replaceChildren(el("h2", {}, "Event log"));
    const form = el("form", { class: "filters", id: "event-filters" });
    const sel = el("select", { name: "event", "aria-label": "event" });
    for (const n of EVENT_NAMES) {
      const o = el("option", { value: n }, n || "any event");
      if ((params.get("event") || "") === n) o.selected = true;
      sel.append(o);
    }
    form.append(
      el("label", {}, "Session ", el("input", { name: "session", inputmode: "numeric", value: params.get("session") || "" })),
      el("label", {}, "Event ", sel),
      el("label", {}, "Since (minutes) ", el("input", { name: "since", inputmode: "numeric", value: params.get("since") || "" })),
      appSelect(params),
      el("button", { type: "submit" }, "Filter"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, val] of new FormData(form)) if (val) q.set(k, String(val));
      location.hash = "#/events?" + q.toString();
    });
    v.append(form);
    const box = el("div", {}, "Loading...");
    v.append(box);
    const q = new URLSearchParams({ limit: "200" });
    if (/^[0-9]{1,20}$/.test(params.get("session") || "")) q.set("session", params.get("session"));
    if (params.get("event")) q.set("event", params.get("event"));
    const since = Number(params.get("since"));
    if (since > 0) q.set("start_ts", String(Date.now() - since * 60000));
    const page = Math.max(0, Number(params.get("page")) || 0);
    q.set("page", String(page));
    const app = params.get("app");
    if (state.session.all_apps && app !== null) q.set("app", app);
    try {
      const rows = await api("GET", "/api/console/events?" + q.toString());
      box.replaceChildren();
      const tbody = el("tbody");
      for (const ev of rows) {
        const [details, why] = explain(ev);
        tbody.append(el("tr", { "data-event": ev.event }, el("td", { "data-label": "Time" }, when(ev.created_at)),
          el("td", { "data-label": "Session" }, sessionLink(ev.session, app)), el("td", { "data-label": "Event" }, ev.event),
          el("td", { "data-label": "Details" }, details, why ? el("em", {}, " - " + why) : null)));
      }
      box.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", {}, "Session"),
        el("th", {}, "Event"), el("th", {}, "Details"))), tbody));
      if (!rows.length) box.append(el("p", { class: "muted" }, "No event matches."));
      const nav = el("p", { class: "pager" });
      const link = (p, text) => { const n = new URLSearchParams(params); n.set("page", String(p)); return el("a", { href: "#/events?" + n }, text); };
      if (page > 0) nav.append(link(page - 1, "newer"), " ");
      if (rows.length === 200) nav.append(link(page + 1, "older"));
      box.append(nav);
    } catch (e) {
      box.replaceChildren(el("p", { class: "bad" }, String(e.message || e)));
    }
  }

  // Recordings of the app (standalone: this node's files), with download links.
  async function renderRecordings(params) {
    const v = view();
    v.replaceChildren(el("h2", {}, "Recordings"));
    const choice = appSelect(params);
    if (choice) {
      choice.querySelector("select").addEventListener("change", (e) => {
        location.hash = "#/recordings?" + new URLSearchParams({ app: e.target.value }).toString();
      });
      v.append(el("p", { class: "filters" }, choice));
    }
    const box = el("div", {}, "Loading...");
    v.append(box);
    try {
      const d = await api("GET", "/api/console/recordings" + appQuery(params.get("app")));
      for (const m of d.unanswered || []) v.append(el("p", { class: "bad" }, m));
      if (!d.files.length) { box.replaceChildren(el("p", { class: "muted", id: "no-recordings" }, "No recording yet: use Record on a live room.")); return; }
      const tbody = el("tbody");
      for (const f of d.files.slice().reverse()) {
        const size = f.size === undefined ? "" : (f.size / 1048576).toFixed(2) + " MB";
        tbody.append(el("tr", { "data-recording": f.path },
          el("td", { "data-label": "Room" }, f.room + (f.node !== undefined ? " (zone " + f.zone + " node " + f.node + ")" : "")),
          el("td", { "data-label": "Peer" }, f.peer),
          el("td", { "data-label": "Track" }, [f.kind, f.track, f.codec].filter(Boolean).join(" · ")),
          el("td", { "data-label": "Status" }, f.status + (f.duration !== undefined && f.duration !== null ? " · " + Number(f.duration).toFixed(1) + " s" : "")),
          el("td", { "data-label": "File" }, f.download ? el("a", { href: f.download, download: "", class: "download" }, f.path.split("/").pop() + " (" + size + ")")
            : (f.uploaded ? "uploaded to S3: " + f.s3_key : f.path))));
      }
      box.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ...["Room", "Peer", "Track", "Status", "File"].map((h) => el("th", {}, h)))), tbody));
    } catch (e) {
      box.replaceChildren(el("p", { class: "bad" }, String(e.message || e)));
    }
  }

  // The console role: zones -> gateways, media and connector nodes, pushed with the rooms.
  function renderCluster() {
    const v = view();
    v.replaceChildren(el("h2", {}, "Cluster"));
    const c = state.cluster;
    if (!c) { v.append(el("p", { class: "muted" }, "Waiting for the cluster's reports...")); return; }
    if (!c.connected) v.append(el("p", { class: "bad", id: "cluster-lost" }, "This console lost the cluster: what follows is stale."));
    if (!c.zones.length) v.append(el("p", { class: "muted" }, "No member reported yet."));
    const num = (x, unit) => (x === null || x === undefined ? "" : x + unit);
    for (const z of c.zones) {
      const tbody = el("tbody");
      for (const role of ["gateway", "media", "connector"]) {
        for (const n of z[role]) {
          const health = n.state !== "up" ? n.state : n.ready ? (n.draining ? "draining" : "ready") : "not ready: " + (n.reason || "");
          tbody.append(el("tr", { "data-role": role, "data-node": n.node, "data-state": n.state, class: n.state === "up" && n.ready ? "" : "bad" },
            el("td", { "data-label": "Role" }, role), el("td", { "data-label": "Node" }, n.node),
            el("td", { "data-label": "CPU" }, num(n.cpu, " %")), el("td", { "data-label": "Memory" }, num(n.mem_mb, " MB")),
            el("td", { "data-label": "Sessions" }, role === "media" ? n.sessions + " / " + n.capacity : role === "gateway" ? "routed " + n.routed : "inbox " + n.inbox),
            el("td", { "data-label": "Health" }, health), el("td", { "data-label": "Report age" }, n.age_s + " s"),
            el("td", { "data-label": "HTTP" }, n.http || "")));
        }
      }
      v.append(el("section", { class: "zone", "data-zone": z.zone }, el("h3", {}, "Zone " + z.zone),
        el("table", {}, el("thead", {}, el("tr", {}, ...["Role", "Node", "CPU", "Memory", "Sessions", "Health", "Report age", "HTTP"].map((h) => el("th", {}, h)))), tbody)));
    }
  }

  async function renderNode() {
    const v = view();
    v.replaceChildren(el("h2", {}, "This node"));
    const box = el("div", {}, "Loading...");
    v.append(box);
    try {
      const n = await api("GET", "/api/console/node");
      const mb = n.rss_bytes === null ? "?" : (n.rss_bytes / 1048576).toFixed(0) + " MB";
      box.replaceChildren(
        el("p", { id: "node-health", class: n.ready ? "" : "bad" }, n.ready ? "Ready" : "Not ready: " + n.reason,
          n.draining ? " (draining)" : ""),
        el("p", {}, n.role + " node " + n.node_id + ", zone " + n.zone + ", trackmesh " + n.version +
          ", up " + Math.round(n.uptime_s / 60) + " min, memory (this process) " + mb +
          ", session cap " + n.sessions_capacity + " per worker"));
      const tbody = el("tbody");
      for (const w of n.workers) {
        tbody.append(w.error ? el("tr", { "data-worker": w.worker }, el("td", {}, w.worker), el("td", { class: "bad" }, w.error))
          : el("tr", { "data-worker": w.worker }, el("td", { "data-label": "Worker" }, w.worker),
            el("td", { "data-label": "Sessions" }, w.sessions), el("td", { "data-label": "Rooms" }, w.rooms),
            el("td", { "data-label": "Loop lag" }, w.loop_lag_ms + " ms"), el("td", { "data-label": "UDP port" }, w.udp_port)));
      }
      box.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Worker"), el("th", {}, "Sessions"),
        el("th", {}, "Rooms"), el("th", {}, "Loop lag"), el("th", {}, "UDP port"))), tbody));
    } catch (e) {
      box.replaceChildren(el("p", { class: "bad" }, String(e.message || e)));
    }
  }

  // ---- routing and the live stream -----------------------------------------------------------------

  function route() {
    const hash = location.hash || "#/rooms";
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", hash.startsWith(a.getAttribute("href")));
    if (path.startsWith("/session/")) return renderSession(decodeURIComponent(path.slice("/session/".length)), params);
    if (path === "/peers") return renderPeers(params);
    if (path === "/events") return renderEvents(params);
    if (path === "/node") return renderNode();
    if (path === "/cluster") return renderCluster();
    if (path === "/recordings") return renderRecordings(params);
    return renderRooms();
  }

  function connectStream() {
    const es = new EventSource("/api/console/stream");
    state.stream = es;
    es.addEventListener("rooms", (e) => {
      const data = JSON.parse(e.data);
      state.rooms = data.rooms;
      for (const r of data.rooms) for (const p of r.peers) if (p.app !== undefined) state.appOf.set(p.session, p.app);
      if (state.appOf.size > 10000) state.appOf.clear();  // bounded: only sessions seen live matter
      state.unanswered = data.unanswered || [];
      state.stale = data.stale || null;
      state.roomsAt = Date.now();
      if (state.stale) setStatus("Stale: the console lost the cluster (" + state.stale.reason + "); rooms as of " + new Date(state.stale.since * 1000).toLocaleTimeString() + ".", true);
      else if (state.unanswered.length || Date.now() - (state.actionAt || 0) > 8000) setStatus(state.unanswered.length ? "Partial view: " + state.unanswered.join("; ") : "", state.unanswered.length > 0);
      const hash = location.hash || "#/rooms";
      if (hash.startsWith("#/rooms") && !state.armed) renderRooms();
    });
    es.addEventListener("cluster", (e) => {
      state.cluster = JSON.parse(e.data);
      if ((location.hash || "").startsWith("#/cluster")) renderCluster();
    });
    es.addEventListener("logout", () => location.reload());
    es.onerror = () => {
      const at = state.roomsAt ? new Date(state.roomsAt).toLocaleTimeString() : "never";
      setStatus("Live updates interrupted, reconnecting: the rooms shown are stale (as of " + at + ").", true);
    };
  }

  async function start() {
    try {
      state.session = await api("GET", "/api/console/session");
    } catch (e) {
      return;
    }
    // The zones view: the cluster operator's (default app) only, never a tenant's.
    if (state.session.role === "console" && state.session.app === "") document.getElementById("nav-cluster").hidden = false;
    document.getElementById("nav-recordings").hidden = false;  // standalone: its files; the console role: the media nodes' files
    document.getElementById("who").textContent = state.session.all_apps ? "cluster operator (every app)"
      : "app " + (state.session.app === "" ? "(default)" : state.session.app);
    document.getElementById("logout").addEventListener("click", async () => {
      try { await api("POST", "/console/logout"); } catch (e) { /* reloaded below either way */ }
      location.href = "/console";
    });
    window.addEventListener("hashchange", route);
    connectStream();
    route();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
