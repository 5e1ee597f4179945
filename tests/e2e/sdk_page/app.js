// Test app on @atm0s-media-sdk/core, driven by tests/e2e/test_sdk_rooms.py through window.TM.
import { Session, SessionEvent, Kind, TrackReceiverEvent, TrackSenderEvent, AudioMixerEvent } from "@atm0s-media-sdk/core";

const t0 = performance.now();
const TM = { events: [], session: null, receivers: [], assigned: {}, auto: true, errors: [] };
window.TM = TM;

function log(type, data) {
  TM.events.push({ type, t: performance.now() - t0, at: Date.now(), ...data });
}

function freeReceiver(kind) {
  return TM.receivers.find((r) => r.kind === kind && !TM.assigned[r.name]);
}

async function autoAttach(ev) {
  // TM.grow: with no free receiver, add one after connect (the SDK renegotiates the new m-line).
  const r = freeReceiver(ev.kind) || (TM.grow ? TM.addReceiver(ev.kind) : null);
  if (!r) return;
  TM.assigned[r.name] = { peer: ev.peer, track: ev.track };
  try {
    await r.attach({ peer: ev.peer, track: ev.track });
    log("attached", { name: r.name, peer: ev.peer, track: ev.track });
  } catch (e) {
    TM.errors.push({ op: "attach", name: r.name, e: JSON.stringify(e) });
    delete TM.assigned[r.name];
  }
}

async function autoDetach(ev) {
  for (const r of TM.receivers) {
    const a = TM.assigned[r.name];
    if (a && a.peer === ev.peer && a.track === ev.track) {
      delete TM.assigned[r.name];
      try { await r.detach(); } catch (e) { TM.errors.push({ op: "detach", name: r.name, e: JSON.stringify(e) }); }
    }
  }
}

TM.start = async (opts) => {
  const { gateway, token, room, peer, camera = true, mic = true, audioReceivers = 0, videoReceivers = 0,
          manual = false, auto = true, simulcast = false, width = 640, height = 360, mixer = 0,
          codec = null, scalabilityMode = null, grow = false } = opts;
  TM.auto = auto;
  TM.grow = grow;
  let stream = null;
  TM.stream = null;
  if (camera || mic) {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: mic, video: camera ? { width, height, frameRate: 30 } : false });
    TM.stream = stream;
  }
  const session = new Session(gateway, {
    token,
    join: { room, peer, publish: { peer: true, tracks: true }, subscribe: { peers: !manual, tracks: !manual },
            features: mixer ? { mixer: { mode: 0, outputs: mixer } } : undefined },
  });
  TM.session = session;
  // The SDK adds its transceivers inside connect(), right before its offer: wrap addTransceiver
  // to offer one video codec only and/or ask for an SVC / temporal-layer mode (W3C webrtc-svc).
  if (codec || scalabilityMode) {
    const pc = session.peer;
    const add = pc.addTransceiver.bind(pc);
    pc.addTransceiver = (trackOrKind, init) => {
      const isVideo = trackOrKind === "video" || (trackOrKind && trackOrKind.kind === "video");
      const sending = init && init.direction === "sendonly";
      if (isVideo && sending && scalabilityMode && !(init.sendEncodings && init.sendEncodings.length > 1)) {
        init = { ...init, sendEncodings: [{ scalabilityMode }] };
      }
      const t = add(trackOrKind, init);
      if (isVideo && codec) {
        const caps = RTCRtpReceiver.getCapabilities("video").codecs;
        const want = caps.filter((c) => c.mimeType.toLowerCase() === "video/" + codec.toLowerCase()
                                        && (codec.toLowerCase() !== "vp9" || !/profile-id=[^0]/.test(c.sdpFmtpLine || "")));
        // Only that codec (and its rtx/red/fec helpers): the server answers in its own codec
        // order, whatever order the offer prefers.
        const rest = caps.filter((c) => !want.includes(c) && /rtx|red|ulpfec|flexfec/i.test(c.mimeType));
        try { t.setCodecPreferences([...want, ...rest]); } catch (e) { TM.errors.push({ op: "codec", e: String(e) }); }
      }
      return t;
    };
  }
  if (camera) session.sender("camera", stream.getVideoTracks()[0], { priority: 1, bitrate: 0, simulcast });
  if (mic) session.sender("mic", stream.getAudioTracks()[0], { priority: 1, bitrate: 0 });
  for (let i = 0; i < videoReceivers; i++) TM.receivers.push(session.receiver(Kind.VIDEO));
  for (let i = 0; i < audioReceivers; i++) TM.receivers.push(session.receiver(Kind.AUDIO));
  for (const r of TM.receivers) watchReceiver(r);
  for (const s of session.senders) watchSender(s);
  const room_events = {
    [SessionEvent.ROOM_PEER_JOINED]: "peer_joined",
    [SessionEvent.ROOM_PEER_UPDATED]: "peer_updated",
    [SessionEvent.ROOM_PEER_LEAVED]: "peer_leaved",
    [SessionEvent.ROOM_TRACK_STARTED]: "track_started",
    [SessionEvent.ROOM_TRACK_UPDATED]: "track_updated",
    [SessionEvent.ROOM_TRACK_STOPPED]: "track_stopped",
  };
  for (const [ev, name] of Object.entries(room_events)) {
    session.on(ev, (e) => {
      log(name, { peer: e.peer, track: e.track, kind: e.kind });
      if (TM.auto && name === "track_started") autoAttach(e);
      if (TM.auto && name === "track_stopped") autoDetach(e);
    });
  }
  session.on(SessionEvent.SESSION_CHANGED, (s) => log("session", { state: s }));
  // Audio mixer: the raw slot events as they arrive, and the SDK's own voice events.
  session.dc.on("event.features.mixer", (ev) => {
    if (ev.slotSet) log("slot_set", { slot: ev.slotSet.slot, peer: ev.slotSet.source.peer, track: ev.slotSet.source.track });
    if (ev.slotUnset) log("slot_unset", { slot: ev.slotUnset.slot });
  });
  if (session.mixer) {
    session.mixer.on(AudioMixerEvent.VOICE_ACTIVITY, (v) => log("mixer_voice", { peer: v.peer, active: v.active, level: v.audio_level }));
    for (const r of session.mixer.receivers) {
      const a = document.createElement("audio");
      a.autoplay = true; a.srcObject = r.stream; document.body.appendChild(a);
    }
  }
  await session.connect();
  log("connected", { state: session.state, conn: session.conn_id });
  return session.state;
};

function watchReceiver(r) {
  r.on(TrackReceiverEvent.StatusUpdated, (s) => log("receiver_state", { name: r.name, status: s }));
  r.on(TrackReceiverEvent.VoiceActivity, (v) => log("voice", { name: r.name, level: v.audioLevel }));
  // The SDK does not surface receiver stats events: read them off its data-channel events.
  TM.session.dc.on("event.receiver." + r.name, (ev) => {
    if (ev.stats) log("receiver_stats", { name: r.name, source: ev.stats.source || {}, transmit: ev.stats.transmit || {} });
  });
  if (r.kind === Kind.VIDEO) {
    const v = document.createElement("video");
    v.muted = true; v.autoplay = true; v.playsInline = true; v.id = "v-" + r.name;
    v.srcObject = r.stream;
    document.body.appendChild(v);
  }
}
function watchSender(s) {
  s.on(TrackSenderEvent.StatusUpdated, (st) => log("sender_state", { name: s.name, status: st }));
}

// ---- after connect: senders and receivers added and removed (renegotiation, session.sdp) ----
// A receiver added after connect: the SDK adds its transceiver and renegotiates; attach waits for its ontrack.
TM.addReceiver = (kind) => {
  const r = TM.session.receiver(kind);
  TM.receivers.push(r);
  watchReceiver(r);
  log("receiver_added", { name: r.name, kind });
  return r;
};
// A "screen share" after connect: a canvas animation captured as a video track (a fake display stream).
TM.startScreen = (name = "screen", width = 640, height = 360) => {
  const c = document.createElement("canvas");
  c.width = width; c.height = height;
  const g = c.getContext("2d");
  let n = 0;
  TM.canvasTimers = TM.canvasTimers || {};
  TM.canvasTimers[name] = setInterval(() => {
    n++;
    g.fillStyle = `hsl(${(n * 7) % 360} 70% 40%)`; g.fillRect(0, 0, width, height);
    g.fillStyle = "#fff"; g.font = "48px sans-serif"; g.fillText(name + " " + n, 20 + (n % 200), 80 + (n % 100));
  }, 33);
  const track = c.captureStream(30).getVideoTracks()[0];
  const s = TM.session.sender(name, track, { priority: 1, bitrate: 0 });
  watchSender(s);
  log("sender_added", { name });
  return true;
};
// Stop sharing the SDK way: detach (sender.detach request, no renegotiation), then stop the capture.
TM.stopScreen = async (name = "screen") => {
  const s = TM.session.senders.find((x) => x.name === name);
  const track = s.track;
  try { await s.detach(); } catch (e) { return { ok: false, error: String(e) }; }
  if (track) track.stop();
  clearInterval(TM.canvasTimers[name]);
  return { ok: true };
};
// Stop a sender's transceiver (what an app may do): its m-line goes to port 0 in the next offer.
TM.stopTransceiver = (name) => {
  const s = TM.session.senders.find((x) => x.name === name);
  s.transceiver.stop();
  if (TM.canvasTimers && TM.canvasTimers[name]) clearInterval(TM.canvasTimers[name]);
  return s.transceiver.mid;
};
TM.sdp = () => ({ local: TM.session.peer.localDescription && TM.session.peer.localDescription.sdp,
                  remote: TM.session.peer.remoteDescription && TM.session.peer.remoteDescription.sdp,
                  signaling: TM.session.peer.signalingState });

TM.attach = async (name, peer, track, config) => {
  const r = TM.receivers.find((x) => x.name === name);
  TM.assigned[name] = { peer, track };
  try { await r.attach({ peer, track }, config); return { ok: true }; }
  catch (e) { return { ok: false, error: e }; }
};
TM.config = async (name, config) => {
  const r = TM.receivers.find((x) => x.name === name);
  try { await r.config(config); return { ok: true }; } catch (e) { return { ok: false, error: e }; }
};
TM.detach = async (name) => {
  const r = TM.receivers.find((x) => x.name === name);
  delete TM.assigned[name];
  try { await r.detach(); return { ok: true }; } catch (e) { return { ok: false, error: e }; }
};
// Any request through the SDK's own data-channel codec: TM.request("room", {subscribe: {peer: "b"}}).
TM.request = async (kind, body) => {
  const dc = TM.session.dc;
  try { return { ok: true, res: await dc.request({ reqId: dc.gen_req_id(), [kind]: body }) }; }
  catch (e) { return { ok: false, error: e && e.code !== undefined ? { code: e.code, message: e.message } : String(e) }; }
};
// Mute/unmute this page's microphone (a disabled track sends silence: no audio level above -127 dBov).
TM.mute = (on) => { for (const t of TM.stream.getAudioTracks()) t.enabled = !on; };
// Room message channels: open (sub + start_pub, as the SDK does), publish, log what arrives.
TM.channels = {};
TM.openChannel = async (label) => {
  const ch = await TM.session.createMessageChannel(label);
  ch.on("message", (m) => log("message", { label, peer: m.peer, message: m.message }));
  TM.channels[label] = ch;
  return true;
};
TM.publish = async (label, text) => {
  try { await TM.channels[label].publish(text); return { ok: true }; } catch (e) { return { ok: false, error: String(e) }; }
};
TM.restartIce = async () => { await TM.session.restartIce(); return TM.session.conn_id; };
TM.leave = async () => { await TM.session.leave(); };
TM.disconnect = async () => { await TM.session.disconnect(); };

// Per receiver: frames decoded / packets / bytes / frame size, read from getStats by the receiver's mid.
TM.inbound = async () => {
  const byMid = {};
  const all = [...TM.receivers, ...(TM.session.mixer ? TM.session.mixer.receivers : [])];
  for (const r of all) if (r.transceiver) byMid[r.transceiver.mid] = r.name;
  const out = {};
  const stats = await TM.session.peer.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && byMid[s.mid] !== undefined) {
      out[byMid[s.mid]] = { kind: s.kind, framesDecoded: s.framesDecoded || 0, packets: s.packetsReceived || 0,
                            bytes: s.bytesReceived || 0, width: s.frameWidth || 0, height: s.frameHeight || 0,
                            fps: s.framesPerSecond || 0, freezes: s.freezeCount || 0,
                            freezeSeconds: s.totalFreezesDuration || 0, dropped: s.framesDropped || 0,
                            codec: s.codecId ? (stats.get(s.codecId) || {}).mimeType || "" : "",
                            decoder: s.decoderImplementation || "" };
    }
  });
  return out;
};
TM.outbound = async () => {
  const out = [];
  const stats = await TM.session.peer.getStats();
  stats.forEach((s) => { if (s.type === "outbound-rtp") out.push({ kind: s.kind, rid: s.rid, packets: s.packetsSent,
    width: s.frameWidth || 0, height: s.frameHeight || 0, frames: s.framesEncoded || 0, limit: s.qualityLimitationReason,
    mode: s.scalabilityMode || "", encoder: s.encoderImplementation || "",
    codec: s.codecId ? (stats.get(s.codecId) || {}).mimeType || "" : "",
    target: s.targetBitrate || 0, active: s.active }); });
  return out;
};
