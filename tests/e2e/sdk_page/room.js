// The sample conference page (/samples/room.html) on @atm0s-media-sdk/core. Bundled into the page by
// build-room.mjs; edit this file, not the generated HTML.
import { Session, SessionEvent, Kind, TrackReceiverEvent } from "@atm0s-media-sdk/core";

const $ = (id) => document.getElementById(id);
const q = new URLSearchParams(location.search);
for (const k of ["room", "peer", "token"]) if (q.get(k)) $(k).value = q.get(k);
if (q.has("secret")) {
  // Never accepted from a URL: it would land in history, logs and Referer headers.
  $("status").textContent = "?secret= is ignored: type the app secret, use ?token=, or start the node with --dev";
}
if (!$("peer").value) $("peer").value = "guest-" + Math.random().toString(36).slice(2, 7);

// Receivers made before connecting (?receivers=N, default 4); more are added after join (the SDK renegotiates)
// when more tracks come than that.
const FIRST_RECEIVERS = Math.max(0, Number(q.get("receivers")) || 4);
let session = null, cam = null, mic = null, screen = null, local = null, chat = null;
const tiles = {}; // receiver name -> {peer, track, el}

function status(text) { $("status").textContent = text; }
function say(from, text) {
  const li = document.createElement("li");
  li.textContent = from + ": " + text;
  $("messages").appendChild(li);
}

async function token(room, peer) {
  // A token typed or passed as ?token= wins; else the app secret typed here (sent in a POST header,
  // never in a URL); else a node started with --dev hands demo tokens to loopback clients.
  if ($("token").value) return $("token").value;
  if ($("secret").value) {
    const r = await fetch("/token/webrtc", {
      method: "POST",
      headers: { Authorization: "Bearer " + $("secret").value, "Content-Type": "application/json" },
      body: JSON.stringify({ room, peer, ttl: 7200 }),
    });
    const j = await r.json();
    if (!j.status) throw new Error("token refused: " + j.error + (r.status === 401 ? " (check the app secret)" : ""));
    return j.data.token;
  }
  const r = await fetch("/dev/token/webrtc?" + new URLSearchParams({ room, peer }));
  if (r.status === 404) throw new Error("enter the app secret printed at node start, or a token (or start the node with --dev)");
  const j = await r.json();
  if (!j.status) throw new Error("demo token refused: " + j.error);
  return j.data.token;
}

function tile(label, stream, muted) {
  const box = document.createElement("figure");
  const v = document.createElement("video");
  v.autoplay = true; v.playsInline = true; v.muted = muted; v.srcObject = stream;
  const cap = document.createElement("figcaption");
  cap.textContent = label;
  box.append(v, cap);
  $("grid").appendChild(box);
  return box;
}

async function join() {
  const room = $("room").value.trim(), peer = $("peer").value.trim();
  if (!room || !peer) return status("room and name are needed");
  $("join").disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    local = tile(peer + " (you)", media, true);
    session = new Session(location.origin, {
      token: await token(room, peer),
      join: { room, peer, publish: { peer: true, tracks: true }, subscribe: { peers: true, tracks: true } },
    });
    cam = session.sender("camera", media.getVideoTracks()[0], { priority: 1, bitrate: 0, simulcast: false });
    mic = session.sender("mic", media.getAudioTracks()[0], { priority: 1, bitrate: 0 });
    // The screen sender is created when sharing starts (a new m-line after join), see $("share").onclick.
    const receivers = [];
    const addReceiver = (kind) => {
      const r = session.receiver(kind);
      receivers.push(r);
      r.on(TrackReceiverEvent.VoiceActivity, () => {
        const x = tiles[r.name];
        if (x) for (const v of Object.values(tiles)) if (v.peer === x.peer && v.el && v.el.classList) {
          v.el.classList.add("speaking"); setTimeout(() => v.el.classList.remove("speaking"), 600);
        }
      });
      return r;
    };
    for (let i = 0; i < FIRST_RECEIVERS; i++) addReceiver(Kind.VIDEO);
    for (let i = 0; i < FIRST_RECEIVERS; i++) addReceiver(Kind.AUDIO);
    session.on(SessionEvent.ROOM_TRACK_STARTED, async (t) => {
      const r = receivers.find((x) => x.kind === t.kind && !tiles[x.name]) || addReceiver(t.kind);
      tiles[r.name] = { peer: t.peer, track: t.track };
      if (t.kind === Kind.VIDEO) tiles[r.name].el = tile(t.peer + " " + t.track, r.stream, true);
      else { const a = new Audio(); a.autoplay = true; a.srcObject = r.stream; tiles[r.name].el = a; }
      try { await r.attach({ peer: t.peer, track: t.track }); } catch (e) { console.warn("attach", e); }
    });
    session.on(SessionEvent.ROOM_TRACK_STOPPED, async (t) => {
      for (const r of receivers) {
        const x = tiles[r.name];
        if (x && x.peer === t.peer && x.track === t.track) {
          delete tiles[r.name];
          if (x.el && x.el.remove) x.el.remove();
          try { await r.detach(); } catch (e) { console.warn("detach", e); }
        }
      }
    });
    session.on(SessionEvent.ROOM_PEER_JOINED, (p) => say("*", p.peer + " joined"));
    session.on(SessionEvent.ROOM_PEER_LEAVED, (p) => say("*", p.peer + " left"));
    status("connecting...");
    await session.connect();
    status(session.state === "connected" ? "in room " + room + " as " + peer : "connection failed: " + session.state);
    try {
      chat = await session.createMessageChannel("chat");
      // The server echoes our own messages back (we are subscribed too): they are shown as "me" then.
      chat.on("message", (m) => say(m.peer === peer ? "me" : m.peer,
        typeof m.message === "string" ? m.message : new TextDecoder().decode(m.message)));
      $("send").disabled = false;
    } catch (e) {
      say("*", "chat is not available: " + (e && e.message ? e.message : e));
    }
    for (const id of ["mute", "camoff", "share", "leave"]) $(id).disabled = false;
  } catch (e) {
    status("error: " + e.message);
    $("join").disabled = false;
  }
}

$("join").onclick = join;
$("mute").onclick = () => {
  const t = mic.track; if (!t) return;
  t.enabled = !t.enabled; $("mute").textContent = t.enabled ? "Mute" : "Unmute";
};
$("camoff").onclick = () => {
  const t = cam.track; if (!t) return;
  t.enabled = !t.enabled; $("camoff").textContent = t.enabled ? "Camera off" : "Camera on";
};
async function stopSharing() {
  if (!screen || !screen.attached) return;
  const track = screen.track;
  await screen.detach(); // the others see track_stopped; the m-line stays for the next share
  track.stop();
  $("share").textContent = "Share screen";
}
$("share").onclick = async () => {
  if (screen && screen.attached) return stopSharing();
  let s;
  try { s = await navigator.mediaDevices.getDisplayMedia({ video: true }); }
  catch (e) { return say("*", "screen share refused: " + (e && e.message ? e.message : e)); }
  const track = s.getVideoTracks()[0];
  track.onended = stopSharing;
  // First share: a new sender after join (the SDK renegotiates; the server publishes it from the offer's
  // tracks). Later shares reuse its m-line.
  if (!screen) screen = session.sender("screen", track, { priority: 1, bitrate: 0 });
  else await screen.attach(track);
  $("share").textContent = "Stop sharing";
};
$("send").onclick = async () => {
  const text = $("text").value; if (!text || !chat) return;
  try { await chat.publish(text); $("text").value = ""; } catch (e) { say("*", "not sent: " + (e && e.message ? e.message : e)); }
};
$("leave").onclick = async () => {
  try { await session.disconnect(); } catch (e) { console.warn(e); }
  location.reload();
};
