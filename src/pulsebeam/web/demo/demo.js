// The PulseBeam demo app: sign in (examples/app_server.py mints a short-lived token), join a
// room (a group), see who is there, chat over a data channel, start a video call, see whether
// each connection is direct or relayed and its round-trip time, and read errors in plain words.
// The SDK is imported from the PulseBeam server itself, as any application would.

const $ = (selector) => document.querySelector(selector);

/** @type {{config: any, sdk: any, peer: any, views: Map<string, any>, localStream: MediaStream | null, statsTimer: any}} */
const app = { config: null, sdk: null, peer: null, views: new Map(), localStream: null, statsTimer: null };
window.demo = app; // for the browser tests and for poking at it from the console

function setStatus(text, state) {
  $("#status").textContent = text;
  $("#status").dataset.state = state;
}

/** Turn an SDK or network error into words a person can act on. */
export function explain(err) {
  const code = err?.codeName;
  const message = err?.message ?? String(err);
  const detail = message.charAt(0).toUpperCase() + message.slice(1);
  const server = app.config?.pulsebeam_url ?? "the PulseBeam server";
  if (code === "UNAUTHENTICATED") {
    if (/expired/i.test(detail)) {
      return ["Your sign-in has expired", "The token is no longer valid. Sign in again to get a fresh one."];
    }
    return ["Your token was refused", `The server did not accept the token: ${message}. Sign in again, or mint a token with a key of this project that still exists.`];
  }
  if (code === "PERMISSION_DENIED") {
    return ["Not allowed by the token's policy", `${detail}. Your token only lets you reach the rooms and people its policy names.`];
  }
  if (code === "UNAVAILABLE" || code === "DEADLINE_EXCEEDED") {
    return ["Cannot reach the server", `${server} does not answer (${message}). Check that it is running, then try again.`];
  }
  if (code === "INVALID_ARGUMENT") return ["That does not look right", detail];
  if (err?.name === "TimeoutError") return ["Nobody answered", detail];
  return ["Something went wrong", detail];
}

function showError(err) {
  const [title, text] = Array.isArray(err) ? err : explain(err);
  const box = $("#error");
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = `${title}. `;
  box.append(strong, text);
  box.hidden = false;
  console.warn("demo error:", title, text, err);
}

function clearError() {
  $("#error").hidden = true;
}

async function loadConfig() {
  if (!app.config) app.config = await (await fetch("config.json")).json();
  return app.config;
}

async function loadSdk() {
  if (app.sdk) return app.sdk;
  const { pulsebeam_url: url } = await loadConfig();
  try {
    app.sdk = await import(`${url}/sdk/pulsebeam-peer.js`);
  } catch (err) {
    throw { codeName: "UNAVAILABLE", message: `could not load the SDK from ${url}/sdk/ (${err.message})` };
  }
  return app.sdk;
}

async function login(event) {
  event.preventDefault();
  clearError();
  const body = { name: $("#name").value, password: $("#password").value, room: $("#room").value };
  let reply;
  try {
    const response = await fetch("api/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    reply = await response.json();
    if (!response.ok) return showError(["Sign-in failed", reply.error ?? `HTTP ${response.status}`]);
  } catch (err) {
    return showError(["Cannot reach the app server", err.message]);
  }
  const tokenProvider = async () => {
    const response = await fetch("api/token", { method: "POST" });
    const fresh = await response.json();
    if (!response.ok) throw new Error(fresh.error ?? `HTTP ${response.status}`);
    return fresh.token;
  };
  await goOnline(reply.token, tokenProvider);
}

async function useToken(event) {
  event.preventDefault();
  clearError();
  await goOnline($("#token-input").value.trim(), undefined);
}

async function goOnline(token, tokenProvider) {
  setStatus("connecting…", "connecting");
  try {
    const sdk = await loadSdk();
    const peer = await sdk.createPeer({
      token,
      baseUrl: `${app.config.pulsebeam_url}/grpc`,
      forceRelay: $("#relay").checked,
      tokenProvider,
      debug: new URLSearchParams(location.search).has("debug"),
    });
    app.peer = peer;
    peer.onstatechange = (state) => setStatus(state, state === "closed" && peer.error ? "error" : state);
    peer.onerror = (err) => {
      showError(err);
      leaveRoom();
    };
    peer.onsession = addSession;
    peer.start();
    $("#room-name").textContent = peer.groupId;
    $("#me").textContent = peer.peerId;
    $("#signin").hidden = true;
    $("#room-view").hidden = false;
    app.statsTimer = setInterval(refreshStats, 1000);
  } catch (err) {
    setStatus("not connected", "error");
    showError(err);
  }
}

function addSession(session) {
  const key = `${session.other.peerId}/${session.other.connId}`;
  $("#peers .empty")?.remove();
  const item = document.createElement("li");
  item.dataset.peer = session.other.peerId;
  item.innerHTML = '<span class="name"></span> — <span class="state">new</span>, <span class="path">path unknown</span>, RTT <span class="rtt">–</span>';
  item.querySelector(".name").textContent = session.other.peerId;
  $("#peers").append(item);
  const view = { session, item, channel: null, video: null };
  app.views.set(key, view);

  view.channel = session.createDataChannel("chat");
  attachChat(view.channel, session);
  session.ondatachannel = (channel) => {
    if (channel.label === "chat") attachChat(channel, session);
  };
  session.ontrack = (event) => showRemoteVideo(view, event);
  session.onconnectionstatechange = (state) => {
    item.querySelector(".state").textContent = state;
    if (state === "closed") removeSession(key);
  };
  if (app.localStream) for (const track of app.localStream.getTracks()) session.addTrack(track, app.localStream);
}

function removeSession(key) {
  const view = app.views.get(key);
  if (!view) return;
  app.views.delete(key);
  view.item.remove();
  view.video?.closest("figure").remove();
  if (!app.views.size) $("#peers").innerHTML = '<li class="empty">nobody else yet</li>';
}

function attachChat(channel, session) {
  channel.addEventListener("message", (event) => appendChat(session.other.peerId, String(event.data)));
}

function appendChat(who, text) {
  const line = document.createElement("li");
  line.dataset.from = who;
  line.textContent = `${who}: ${text}`;
  $("#chat-log").append(line);
  line.scrollIntoView({ block: "nearest" });
}

function sendChat(event) {
  event.preventDefault();
  const text = $("#chat-input").value;
  const open = [...app.views.values()].filter((v) => v.channel?.readyState === "open");
  if (!open.length) return showError(["Nobody to talk to yet", "Wait until someone else joins the room and shows as connected."]);
  for (const view of open) view.channel.send(text);
  appendChat(app.peer.peerId, text);
  $("#chat-input").value = "";
}

async function startVideo() {
  clearError();
  try {
    app.localStream ??= await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  } catch (err) {
    return showError(["No camera", err.message]);
  }
  const video = figure("you (local)", "local");
  video.srcObject = app.localStream;
  for (const view of app.views.values()) {
    for (const track of app.localStream.getTracks()) view.session.addTrack(track, app.localStream);
  }
  $("#start-video").disabled = true;
}

function showRemoteVideo(view, event) {
  if (event.track.kind !== "video") return;
  view.video ??= figure(view.session.other.peerId, "remote");
  view.video.dataset.peer = view.session.other.peerId;
  view.video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
}

function figure(caption, kind) {
  const fig = document.createElement("figure");
  const video = document.createElement("video");
  video.className = kind;
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  const label = document.createElement("figcaption");
  label.textContent = caption;
  fig.append(video, label);
  $("#videos").append(fig);
  return video;
}

async function refreshStats() {
  for (const view of app.views.values()) {
    const info = await view.session.getConnectionInfo().catch(() => null);
    if (!info) continue;
    const path = view.item.querySelector(".path");
    path.dataset.path = info.path;
    path.textContent = info.path === "relay" ? `relayed (TURN over ${info.protocol})` : `direct (${info.protocol})`;
    path.title = info.relayUrl ?? "";
    view.item.querySelector(".rtt").textContent = info.rttMs === null ? "–" : `${Math.round(info.rttMs)} ms`;
  }
}

async function callPeer(event) {
  event.preventDefault();
  clearError();
  const [groupId, peerId] = $("#call-target").value.trim().split("/");
  try {
    await app.peer.connect(groupId ?? "", peerId ?? "", AbortSignal.timeout(15000));
  } catch (err) {
    if (err?.name === "TimeoutError") return showError(["Nobody answered", `${groupId}/${peerId} did not come online within 15 s.`]);
    showError(err);
  }
}

function leaveRoom() {
  clearInterval(app.statsTimer);
  app.peer?.close();
  for (const key of [...app.views.keys()]) removeSession(key);
  $("#room-view").hidden = true;
  $("#signin").hidden = false;
}

$("#login-form").addEventListener("submit", login);
$("#token-form").addEventListener("submit", useToken);
$("#chat-form").addEventListener("submit", sendChat);
$("#call-form").addEventListener("submit", callPeer);
$("#start-video").addEventListener("click", startVideo);
// Say Bye when the tab goes away, so the others see us leave at once.
window.addEventListener("pagehide", () => app.peer?.close());
$("#leave").addEventListener("click", () => {
  leaveRoom();
  setStatus("signed out", "signed-out");
});
