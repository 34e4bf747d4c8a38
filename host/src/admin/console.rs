//! The web console: server-rendered pages (cluster, node, plugins,
//! properties). A few lines of script poll the page's JSON endpoint and,
//! when it changed, re-fetch the page and swap its live sections, so a page
//! follows the node without a manual refresh. Writes go through the JSON API
//! with the token kept in the browser (localStorage).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};

use super::api::{cluster_view, node_detail, properties_view};
use super::{file_name, AdminState};
use crate::cluster::ClusterState;
use crate::registry::PluginState;

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.4rem;align-items:center;flex-wrap:wrap}
header a{color:#cfd8ff;text-decoration:none}header a.here{color:#fff;font-weight:600;border-bottom:2px solid #8fa7ff}
header .brand{font-weight:700;color:#fff}header .token{margin-left:auto;font-size:.85rem}
main{padding:1rem 1.2rem;max-width:72rem}
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.2rem;width:100%}
th,td{border:1px solid #d8dce3;padding:.35rem .6rem;text-align:left;vertical-align:top;font-size:.92rem}
th{background:#eef0f4}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.8rem;background:#e2e6ee}
.state-clustered,.state-active{background:#d3f5dc;color:#135c2a}
.state-standalone,.state-starting,.state-retired,.state-discovered,.state-validated,.state-loaded,.state-stopping{background:#fff1cc;color:#6b4e00}
.state-faulted,.state-rejected,.state-unreachable{background:#ffd9d9;color:#8a1010}
.senior{background:#dfe6ff;color:#1f3a99}
.warn{background:#fff1cc;border:1px solid #e8c766;padding:.5rem .8rem}
#message{min-height:1.3rem;font-weight:600}#message.error{color:#a01010}#message.ok{color:#135c2a}
.switch{display:inline-flex;gap:.5rem;align-items:center;font-weight:600}
.switch input{width:2.6rem;height:1.3rem}
textarea{width:100%;min-height:22rem;font-family:ui-monospace,monospace;font-size:.85rem}
code{background:#eef0f4;padding:0 .25rem}
";

fn nav(here: &str) -> String {
    let link = |href: &str, label: &str| {
        let class = if href == here { " class=\"here\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    };
    format!(
        "<header><span class=\"brand\">clusterhost</span>{}{}{}{}\
         <span class=\"token\"><label>admin token <input id=\"token\" type=\"password\" size=\"18\" autocomplete=\"off\"></label> \
         <button id=\"token-save\" type=\"button\">use</button></span></header>",
        link("/", "Cluster"),
        link("/node", "Node"),
        link("/plugins", "Plugins"),
        link("/properties", "Properties"),
    )
}

/// A whole page: `watch` is the JSON endpoint whose changes refresh the
/// sections marked `data-live`.
fn page(title: &str, here: &str, watch: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · clusterhost</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body data-watch=\"{watch}\">{}<main><h1>{title}</h1><p id=\"message\" role=\"status\"></p>{body}</main>\
         <script src=\"/console.js\"></script></body></html>",
        nav(here),
        title = esc(title),
        watch = esc(watch),
    ))
}

fn badge(state: &str) -> String {
    format!("<span class=\"badge state-{0}\">{0}</span>", esc(state))
}

fn cluster_state(state: &ClusterState) -> (String, Option<String>) {
    match state {
        ClusterState::Standalone { reason } => ("standalone".into(), reason.clone()),
        ClusterState::Starting { detail, .. } => ("starting".into(), Some(detail.clone())),
        ClusterState::Clustered => ("clustered".into(), None),
        ClusterState::Faulted { reason } => ("faulted".into(), Some(reason.clone())),
    }
}

/// `GET /`: the cluster page.
pub(super) async fn cluster_page(State(state): State<AdminState>) -> Html<String> {
    let view = cluster_view(&state).await;
    let status = &view.status;
    let (name, reason) = cluster_state(&status.state);
    let mut body = String::new();
    body.push_str(&format!(
        "<section id=\"switch\" data-live><label class=\"switch\"><input type=\"checkbox\" id=\"clustering-switch\" \
         data-on=\"/api/cluster/enable\" data-off=\"/api/cluster/disable\"{}> clustering enabled (cluster-wide)</label></section>",
        if status.enabled { " checked" } else { "" }
    ));
    body.push_str("<section id=\"summary\" data-live>");
    body.push_str(&format!(
        "<p>Node <strong id=\"node-name\">{}</strong> is <span id=\"cluster-state\" data-state=\"{name}\">{}</span>{}</p>",
        esc(&status.node),
        badge(&name),
        reason.map(|r| format!(" — <span id=\"cluster-reason\">{}</span>", esc(&r))).unwrap_or_default(),
    ));
    body.push_str(&format!(
        "<p>Strategy: {}. Senior member: {}.</p>",
        status.strategy.as_deref().map(esc).unwrap_or_else(|| "none (no cluster-strategy plugin is active)".into()),
        status.senior.as_deref().map(esc).unwrap_or_else(|| "none".into()),
    ));
    if let Some(warn) = &view.warn {
        body.push_str(&format!("<p class=\"warn\" id=\"warn\">{}</p>", esc(warn)));
    }
    body.push_str("</section><h2>Members</h2><section id=\"members\" data-live>");
    if status.members.is_empty() {
        body.push_str("<p id=\"no-members\">No members: this node is not in a cluster right now.</p>");
    } else {
        body.push_str("<table id=\"members-table\"><tr><th>Member</th><th>Address</th><th>Started</th><th>Strategy plugin</th><th>State</th><th>Reason</th></tr>");
        for m in &status.members {
            let detail = view.details.iter().find(|d| d.id == m.id);
            let (state, reason) = match detail {
                Some(d) if d.unreachable.is_some() => ("unreachable".to_string(), d.unreachable.clone()),
                Some(d) => d.cluster.as_ref().map(cluster_state).unwrap_or(("unknown".into(), None)),
                None => ("unknown".into(), None),
            };
            let plugin = detail.and_then(|d| d.plugin.as_ref());
            let plugin_reason = plugin.and_then(|p| p.reason.clone());
            body.push_str(&format!(
                "<tr data-member=\"{id}\"><td><a href=\"/node?member={id}\">{id}</a>{senior}{local}</td><td>{addr}</td><td>{started}</td>\
                 <td>{version} {pstate}</td><td>{state}</td><td>{reason}</td></tr>",
                id = esc(&m.id),
                senior = if m.senior { " <span class=\"badge senior\" title=\"the senior member\">★ senior</span>" } else { "" },
                local = if m.local { " <span class=\"badge\">this node</span>" } else { "" },
                addr = esc(&m.address),
                started = m.started_at_ms,
                version = esc(&m.plugin_version),
                pstate = plugin.map(|p| badge(&p.state.to_string())).unwrap_or_default(),
                state = badge(&state),
                reason = esc(&[reason, plugin_reason].into_iter().flatten().collect::<Vec<_>>().join("; ")),
            ));
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");
    page("Cluster", "/", "/api/cluster", &body)
}

/// `GET /node[?member=ID]`: a member's caches and plugins.
pub(super) async fn node_page(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
) -> Html<String> {
    let member = query.get("member").cloned();
    let watch = match &member {
        Some(m) => format!("/api/node?member={}", esc(m)),
        None => "/api/node".to_string(),
    };
    let title = format!("Node {}", member.as_deref().unwrap_or(state.ctx().cluster.node()));
    let mut body = String::from("<section id=\"node\" data-live>");
    match node_detail(&state, member.as_deref()).await {
        Err(e) => body.push_str(&format!("<p class=\"warn\">{}</p>", esc(e.message()))),
        Ok(detail) => {
            let (name, reason) = cluster_state(&detail.cluster);
            body.push_str(&format!(
                "<p><strong>{}</strong> (host {}) is {}{}; clustering {}.</p>",
                esc(&detail.node),
                esc(&detail.version),
                badge(&name),
                reason.map(|r| format!(" — {}", esc(&r))).unwrap_or_default(),
                if detail.enabled { "enabled" } else { "disabled" },
            ));
            body.push_str("<h2>Caches</h2>");
            if detail.caches.is_empty() {
                body.push_str("<p>No caches yet.</p>");
            } else {
                body.push_str("<table id=\"caches-table\"><tr><th>Cache</th><th>Mode</th><th>Entries</th><th>Bytes</th><th>Hits</th><th>Misses</th></tr>");
                for c in &detail.caches {
                    body.push_str(&format!(
                        "<tr data-cache=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        if c.clustered { "clustered" } else { "standalone" },
                        c.entries,
                        c.bytes,
                        c.hits,
                        c.misses,
                        n = esc(&c.name),
                    ));
                }
                body.push_str("</table>");
            }
            body.push_str("<h2>Plugins</h2>");
            body.push_str(&plugins_table(&detail.plugins, false));
        }
    }
    body.push_str("</section>");
    page(&title, "/node", &watch, &body)
}

fn plugins_table(records: &[crate::registry::PluginRecord], actions: bool) -> String {
    if records.is_empty() {
        return "<p id=\"no-plugins\">No plugin files in plugins/.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"plugins-table\"><tr><th>File</th><th>Plugin</th><th>Version</th><th>State</th><th>Reason</th>",
    );
    if actions {
        out.push_str("<th>Actions</th>");
    }
    out.push_str("</tr>");
    for r in records {
        let file = file_name(&r.file);
        out.push_str(&format!(
            "<tr data-file=\"{f}\"><td>{f}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(r.id.as_deref().unwrap_or("-")),
            r.version.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            badge(&r.state.to_string()),
            esc(r.reason.as_deref().unwrap_or("")),
            f = esc(&file),
        ));
        if actions {
            let present = r.state != PluginState::Retired || r.reason.as_deref() != Some("its file was removed");
            if present {
                out.push_str(&format!(
                    "<td><button type=\"button\" data-replace=\"{f}\">replace…</button> \
                     <button type=\"button\" data-method=\"DELETE\" data-url=\"/api/plugins/{f}\">remove</button></td>",
                    f = esc(&file)
                ));
            } else {
                out.push_str("<td></td>");
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// `GET /plugins`: state and reason of each plugin file; upload, replace, remove.
pub(super) async fn plugins_page(State(state): State<AdminState>) -> Html<String> {
    let records = state.ctx().plugins.records();
    let mut body = String::from(
        "<form id=\"upload\"><label>Upload a plugin (.so) <input type=\"file\" id=\"plugin-file\" accept=\".so\"></label> \
         <button type=\"submit\">upload</button> <small>A file with the name of an existing one replaces it (a hot upgrade).</small></form>\
         <input type=\"file\" id=\"replace-file\" accept=\".so\" hidden>",
    );
    body.push_str("<section id=\"plugins\" data-live>");
    body.push_str(&plugins_table(&records, true));
    body.push_str("</section>");
    page("Plugins", "/plugins", "/api/plugins", &body)
}

/// `GET /properties`: the values in force, and the file to edit.
pub(super) async fn properties_page(State(state): State<AdminState>) -> Html<String> {
    let mut body = String::new();
    match properties_view(&state).await {
        Err(e) => body.push_str(&format!("<p class=\"warn\">{}</p>", esc(e.message()))),
        Ok(view) => {
            body.push_str("<h2>In force</h2><section id=\"effective\" data-live><table id=\"effective-table\"><tr><th>Key</th><th>Value</th></tr>");
            for (k, v) in &view.effective {
                body.push_str(&format!("<tr data-key=\"{k}\"><td>{k}</td><td>{}</td></tr>", esc(v), k = esc(k)));
            }
            body.push_str("</table></section>");
            body.push_str(&format!(
                "<h2>{}</h2><p>Saved only if it parses; the node then reloads it. <code>admin.*</code>, <code>node.*</code> and \
                 <code>cluster.port</code> apply from the next start.</p><textarea id=\"properties-text\" spellcheck=\"false\">{}</textarea>\
                 <p><button type=\"button\" id=\"save-properties\">save</button></p>",
                esc(&view.file.display().to_string()),
                esc(&view.text),
            ));
        }
    }
    page("Properties", "/properties", "/api/properties", &body)
}

/// The page shown off loopback when the token is missing or wrong.
pub(super) fn login_page(message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>clusterhost: token needed</title>\
         <style>{STYLE}</style></head><body>{}<main><h1>Admin token needed</h1><p id=\"message\" class=\"error\">{}</p>\
         <p>Enter the token from the node's token file above and press <em>use</em>.</p></main>\
         <script src=\"/console.js\"></script></body></html>",
        nav(""),
        esc(message)
    )
}

/// `GET /console.js`.
pub(super) async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

const SCRIPT: &str = r#"// clusterhost console: live sections, token, writes through the JSON API.
'use strict';
const KEY = 'clusterhost-admin-token';
const tokenInput = document.getElementById('token');
tokenInput.value = localStorage.getItem(KEY) || '';
document.getElementById('token-save').addEventListener('click', () => {
  localStorage.setItem(KEY, tokenInput.value.trim());
  document.cookie = 'clusterhost_admin_token=' + encodeURIComponent(tokenInput.value.trim()) + '; path=/; SameSite=Strict';
  location.reload();
});
function say(text, ok) {
  const m = document.getElementById('message');
  if (m) { m.textContent = text; m.className = ok ? 'ok' : 'error'; }
}
async function call(method, url, body) {
  const headers = {};
  const token = localStorage.getItem(KEY);
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const response = await fetch(url, { method, headers, body });
  let json = {};
  try { json = await response.json(); } catch (e) { json = { error: 'the node sent no JSON (HTTP ' + response.status + ')' }; }
  if (!response.ok) throw new Error(json.error || ('HTTP ' + response.status));
  return json;
}
async function act(method, url, body, done) {
  try { await call(method, url, body); say(done, true); }
  catch (e) { say(e.message, false); }
  await refresh(true);
}
// Live sections: poll the page's JSON endpoint; when it changed, fetch the
// page again and swap the sections marked data-live.
let last = null;
async function refresh(force) {
  const watch = document.body.dataset.watch;
  if (!watch) return;
  try {
    const json = await (await fetch(watch)).text();
    if (!force && json === last) return;
    last = json;
    const html = await (await fetch(location.href)).text();
    const fresh = new DOMParser().parseFromString(html, 'text/html');
    for (const el of document.querySelectorAll('[data-live]')) {
      const next = fresh.getElementById(el.id);
      if (next && next.innerHTML !== el.innerHTML) el.innerHTML = next.innerHTML;
    }
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) { /* the node may be restarting: try again on the next tick */ }
}
setInterval(() => refresh(false), 1000);
refresh(false);
document.addEventListener('change', (ev) => {
  const t = ev.target;
  if (t.id === 'clustering-switch') {
    const url = t.checked ? t.dataset.on : t.dataset.off;
    act('POST', url, null, t.checked ? 'clustering enabled cluster-wide' : 'clustering disabled cluster-wide');
  } else if (t.id === 'replace-file' && t.files.length) {
    upload(t.dataset.name, t.files[0]);
    t.value = '';
  }
});
document.addEventListener('click', (ev) => {
  const t = ev.target;
  if (t.dataset && t.dataset.method) {
    act(t.dataset.method, t.dataset.url, null, t.dataset.method + ' ' + t.dataset.url + ': done');
  } else if (t.dataset && t.dataset.replace) {
    const input = document.getElementById('replace-file');
    input.dataset.name = t.dataset.replace;
    input.click();
  } else if (t.id === 'save-properties') {
    act('PUT', '/api/properties', document.getElementById('properties-text').value, 'properties saved; the node reloads them');
  }
});
function upload(name, file) {
  say('uploading ' + name + '…', true);
  act('POST', '/api/plugins?name=' + encodeURIComponent(name), file, name + ' uploaded');
}
const form = document.getElementById('upload');
if (form) form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = document.getElementById('plugin-file');
  if (!input.files.length) { say('choose a .so file first', false); return; }
  upload(input.files[0].name, input.files[0]);
});
"#;
