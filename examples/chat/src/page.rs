//! The chat page: one HTML file, no build step. `?user=NAME` in its URL
//! (or the name typed in) connects the socket; `window.chat` holds what
//! the page received, for people and for the browser test alike.

pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>clusterhost chat</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 2rem; max-width: 50rem; }
#online li.me { font-weight: bold; }
#log { border: 1px solid #ccc; height: 20rem; overflow-y: auto; padding: .5rem; }
.msg .from { font-weight: bold; }
.error { color: #b00; }
.status { color: #666; }
</style>
</head>
<body>
<h1>clusterhost chat</h1>
<p class="status" id="status">not connected</p>
<form id="login"><input id="user" placeholder="your name" required pattern="[A-Za-z0-9_-]{1,32}"> <button>Connect</button></form>
<h2>Online</h2>
<ul id="online"></ul>
<div id="log"></div>
<form id="compose"><input id="to" placeholder="to"> <input id="text" placeholder="message" size="40"> <button>Send</button></form>
<script>
"use strict";
const chat = { user: null, node: null, online: new Set(), received: [], delivered: [], undelivered: [], errors: [], socket: null, open: false };
window.chat = chat;
const $ = (id) => document.getElementById(id);
function showOnline() {
  const list = $("online");
  list.replaceChildren(...[...chat.online].sort().map((u) => {
    const li = document.createElement("li");
    li.textContent = u;
    li.dataset.user = u;
    if (u === chat.user) li.className = "me";
    return li;
  }));
}
function line(cls, parts) {
  const div = document.createElement("div");
  div.className = cls;
  for (const [c, t] of parts) { const s = document.createElement("span"); s.className = c; s.textContent = t; div.append(s, " "); }
  $("log").append(div);
  $("log").scrollTop = $("log").scrollHeight;
}
function connect(user) {
  chat.user = user;
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?user=${encodeURIComponent(user)}`);
  chat.socket = socket;
  socket.onopen = () => { chat.open = true; };
  socket.onclose = () => { chat.open = false; $("status").textContent = "disconnected; reload to connect again"; };
  socket.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "welcome") {
      chat.node = m.node;
      chat.online = new Set(m.online);
      chat.online.add(m.user);
      $("status").textContent = `connected as ${m.user} to node ${m.node}`;
      showOnline();
    } else if (m.type === "presence") {
      if (m.online) chat.online.add(m.user); else chat.online.delete(m.user);
      showOnline();
    } else if (m.type === "message") {
      chat.received.push({ from: m.from, seq: m.seq, text: m.text, sent_ms: m.sent_ms, at_ms: Date.now() });
      line("msg", [["from", m.from + ":"], ["text", m.text]]);
    } else if (m.type === "delivered") {
      chat.delivered.push({ to: m.to, seq: m.seq });
    } else if (m.type === "undelivered") {
      chat.undelivered.push({ to: m.to, seq: m.seq });
      line("error", [["text", m.error]]);
    } else if (m.type === "error") {
      chat.errors.push(m.error);
      line("error", [["text", m.error]]);
    }
  };
}
chat.send = (to, text) => chat.socket.send(JSON.stringify({ type: "send", to, text }));
$("login").onsubmit = (e) => { e.preventDefault(); connect($("user").value); $("login").hidden = true; };
$("compose").onsubmit = (e) => { e.preventDefault(); chat.send($("to").value, $("text").value); line("msg mine", [["from", "you → " + $("to").value + ":"], ["text", $("text").value]]); $("text").value = ""; };
const asked = new URLSearchParams(location.search).get("user");
if (asked) { $("login").hidden = true; connect(asked); }
</script>
</body>
</html>
"#;
