//! The web console: server-rendered pages (cluster, node, plugins,
//! properties). A few lines of script poll the page's JSON endpoint and,
//! when it changed, re-fetch the page and swap its live sections, so a page
//! follows the node without a manual refresh. The cluster page also draws
//! the node's last 10 minutes (`/api/samples`) as inline SVG charts and
//! keeps a timeline of its events, fed by the event stream (`/api/events`).
//! Writes go through the JSON API
//! on a login session (an HttpOnly cookie set by the login form; see auth.rs):
//! the token itself never stays in the browser.

use std::collections::HashMap;

use axum::extract::{Extension, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::api::{cluster_view, node_detail, properties_view, ApiError};
use super::auth::Viewer;
use super::client::segment;
use super::limits::CappedBody;
use super::{file_name, AdminState};
use crate::cluster::ClusterState;
use crate::plugins::registry::PluginState;

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
header .brand{font-weight:700;color:#fff}header .session{margin-left:auto;font-size:.85rem;display:flex;gap:.5rem;align-items:center}
form.login{display:flex;gap:.5rem;align-items:center;margin:1rem 0}
.pending{background:#fff1cc;color:#6b4e00}
main{padding:1rem 1.2rem;max-width:72rem}
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.2rem;width:100%}
th,td{border:1px solid #d8dce3;padding:.35rem .6rem;text-align:left;vertical-align:top;font-size:.92rem}
th{background:#eef0f4}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.8rem;background:#e2e6ee}
.state-clustered,.state-active{background:#d3f5dc;color:#135c2a}
.state-standalone,.state-starting,.state-retired,.state-discovered,.state-validated,.state-loaded,.state-stopping{background:#fff1cc;color:#6b4e00}
.state-faulted,.state-rejected,.state-no-answer,.state-error{background:#ffd9d9;color:#8a1010}
.senior{background:#dfe6ff;color:#1f3a99}
.warn{background:#fff1cc;border:1px solid #e8c766;padding:.5rem .8rem}
#message{min-height:1.3rem;font-weight:600}#message.error{color:#a01010}#message.ok{color:#135c2a}
.switch{display:inline-flex;gap:.5rem;align-items:center;font-weight:600}
.switch input{width:2.6rem;height:1.3rem}
textarea{width:100%;min-height:22rem;font-family:ui-monospace,monospace;font-size:.85rem}
code{background:#eef0f4;padding:0 .25rem}
.muted{color:#5d6678;font-size:.85rem}
#charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:.8rem}
figure.chart{margin:0;background:#fff;border:1px solid #d8dce3;padding:.4rem .6rem}
figure.chart figcaption{font-size:.85rem;font-weight:600;display:flex;justify-content:space-between}
figure.chart figcaption[data-now]::after{content:\"now \" attr(data-now);font-weight:400;color:#5d6678}
figure.chart figcaption[data-total]::after{content:attr(data-total) \" in 10 min\";font-weight:400;color:#5d6678}
figure.chart svg{width:100%;height:7.5rem;display:block}
svg .axis{stroke:#d8dce3;stroke-width:1}svg .line{fill:none;stroke:#3653c9;stroke-width:2}
svg .dot{fill:#3653c9}svg .bar{fill:#c96b36}svg text{font-size:17px;fill:#5d6678}
#timeline{list-style:none;padding:0;margin:.3rem 0;max-height:26rem;overflow-y:auto;background:#fff;border:1px solid #d8dce3}
#timeline li{padding:.25rem .6rem;border-bottom:1px solid #eef0f4;font-size:.9rem;display:flex;gap:.6rem;align-items:baseline}
#timeline time{font-family:ui-monospace,monospace;font-size:.8rem;color:#5d6678;white-space:nowrap}
#timeline .gap{background:#fff1cc}
.kind-member_joined .badge,.kind-plugin_loaded .badge{background:#d3f5dc;color:#135c2a}
.kind-member_left .badge,.kind-plugin_refused .badge,.kind-plugin_faulted .badge{background:#ffd9d9;color:#8a1010}
.kind-plugin_replaced .badge,.kind-senior_changed .badge{background:#dfe6ff;color:#1f3a99}
";

fn nav(here: &str, viewer: Viewer) -> String {
    let link = |href: &str, label: &str| {
        let class = if href == here { " class=\"here\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    };
    let session = if viewer.signed_in {
        "<form class=\"session\" method=\"post\" action=\"/logout\"><span id=\"signed-in\">logged in</span> \
         <button id=\"logout\" type=\"submit\">log out</button></form>"
            .to_string()
    } else {
        let next = if here.is_empty() { "/".to_string() } else { segment(here) };
        format!("<span class=\"session\"><a id=\"login-link\" href=\"/login?next={next}\">log in to make changes</a></span>")
    };
    format!(
        "<header><span class=\"brand\">clusterhost</span>{}{}{}{}{session}</header>",
        link("/", "Cluster"),
        link("/node", "Node"),
        link("/plugins", "Plugins"),
        link("/properties", "Properties"),
    )
}

/// A whole page: `watch` is the JSON endpoint whose changes refresh the
/// sections marked `data-live`.
fn page(title: &str, here: &str, watch: &str, viewer: Viewer, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · clusterhost</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><link rel=\"stylesheet\" href=\"/console.css\"></head>\
         <body data-watch=\"{watch}\">{}<main><h1>{title}</h1><p id=\"message\" role=\"status\"></p>{body}</main>\
         <script src=\"/console.js\"></script></body></html>",
        nav(here, viewer),
        title = esc(title),
        watch = esc(watch),
    ))
}

fn badge(state: &str) -> String {
    format!("<span class=\"badge state-{0}\">{0}</span>", esc(state))
}

fn cluster_state(state: &ClusterState) -> (String, Option<String>) {
    let (name, reason) = super::contract::state_and_reason(state);
    (name.to_string(), reason.map(str::to_string))
}

/// `GET /`: the cluster page.
pub(super) async fn cluster_page(
    State(state): State<AdminState>,
    Extension(viewer): Extension<Viewer>,
) -> Html<String> {
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
            // Its own report, or why there is none (no answer, no tasks).
            let (state, reason) = match detail.map(|d| (&d.missing, &d.cluster)) {
                Some((Some(missing), _)) => (missing.cause.label().to_string(), Some(missing.reason.clone())),
                Some((None, Some(cluster))) => cluster_state(cluster),
                Some((None, None)) | None => ("unknown".into(), None),
            };
            let plugin = detail.and_then(|d| d.plugin.as_ref());
            let plugin_reason = plugin.and_then(|p| p.reason.clone());
            body.push_str(&format!(
                "<tr data-member=\"{id}\"><td><a href=\"/node?member={link}\">{id}</a>{senior}{local}</td><td>{addr}</td><td>{started}</td>\
                 <td>{version} {pstate}</td><td>{state}</td><td>{reason}</td></tr>",
                id = esc(&m.id),
                link = esc(&segment(&m.id)),
                senior = if m.senior { " <span class=\"badge senior\" title=\"the senior member\">★ senior</span>" } else { "" },
                local = if m.local { " <span class=\"badge\">this node</span>" } else { "" },
                addr = esc(&m.address),
                started = crate::text::local_time(m.started_at_ms),
                version = esc(&m.plugin_version),
                pstate = plugin.map(|p| badge(&p.state.to_string())).unwrap_or_default(),
                state = badge(&state),
                reason = esc(&[reason, plugin_reason].into_iter().flatten().collect::<Vec<_>>().join("; ")),
            ));
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");
    // Drawn and fed by the script, not refreshed with the live sections:
    // the charts from /api/samples, the timeline from the event stream.
    body.push_str(
        "<h2>Last 10 minutes on this node</h2><section id=\"charts\" data-samples=\"/api/samples\">\
         <figure class=\"chart\"><figcaption>Members</figcaption><svg id=\"chart-members\" data-field=\"members\" viewBox=\"0 0 600 120\" role=\"img\" aria-label=\"members over time\"></svg></figure>\
         <figure class=\"chart\"><figcaption>Cache operations per second</figcaption><svg id=\"chart-cache-ops\" data-field=\"cache_ops_per_second\" viewBox=\"0 0 600 120\" role=\"img\" aria-label=\"cache operations per second\"></svg></figure>\
         <figure class=\"chart\"><figcaption>Plugin swaps</figcaption><svg id=\"chart-plugin-swaps\" data-field=\"plugin_swaps\" data-bars viewBox=\"0 0 600 120\" role=\"img\" aria-label=\"plugin swaps\"></svg></figure>\
         </section><h2>Timeline</h2><section id=\"timeline-box\"><p id=\"timeline-state\" class=\"muted\">connecting to the event stream…</p>\
         <ol id=\"timeline\" data-stream=\"/api/events\" reversed></ol></section>",
    );
    page("Cluster", "/", "/api/cluster", viewer, &body)
}

/// `GET /node[?member=ID]`: a member's caches and plugins.
pub(super) async fn node_page(
    State(state): State<AdminState>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Html<String> {
    let member = query.get("member").cloned();
    // `page` escapes it for the attribute; the member id is encoded for the URL.
    let watch = match &member {
        Some(m) => format!("/api/node?member={}", segment(m)),
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
                body.push_str("<table id=\"caches-table\"><tr><th>Cache</th><th>Mode</th><th>Entries</th><th>Bytes</th><th>Bounds</th><th>Evictions</th><th>Expiries</th><th>Hits</th><th>Misses</th><th>CAS conflicts</th></tr>");
                // The entry browser shows this node's view: linked from its own page.
                let local = member.as_deref().is_none_or(|m| m == state.ctx().cluster.node());
                for c in &detail.caches {
                    let name = match local {
                        true => format!("<a href=\"/cache?name={}\">{}</a>", segment(&c.name), esc(&c.name)),
                        false => esc(&c.name),
                    };
                    body.push_str(&format!(
                        "<tr data-cache=\"{n}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bounds\">{}</td><td class=\"evictions\">{}</td><td class=\"expiries\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        if c.clustered { "clustered" } else { "standalone" },
                        c.entries,
                        c.bytes,
                        esc(&c.bounds.as_ref().map(|b| b.summary()).unwrap_or_else(|| "unbounded".into())),
                        count_or_dash(c.evictions),
                        count_or_dash(c.expiries),
                        c.hits,
                        c.misses,
                        c.conflicts,
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
    page(&title, "/node", &watch, viewer, &body)
}

/// A count, or "-" when the strategy does not keep it.
fn count_or_dash(count: Option<u64>) -> String {
    count.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// `GET /cache?name=C[&values][&limit=N]`: one cache's first keys on this
/// node, each with when it expires and the time left; its values only
/// when asked (a read of each: a use, so the page then stops refreshing
/// itself, which would keep every entry from going idle).
pub(super) async fn cache_page(
    State(state): State<AdminState>,
    Extension(viewer): Extension<Viewer>,
    Query(mut query): Query<HashMap<String, String>>,
) -> Html<String> {
    let name = query.remove("name");
    // The rest as the listing reads it (`limit`, `values`; others refused).
    let mut rest: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    rest.sort();
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        let body = "<p class=\"warn\">No cache named: open a cache from its node's page (/node).</p>";
        return page("Cache", "/node", "", viewer, body);
    };
    let title = format!("Cache {name}");
    let listing = match super::api::listing_options(Some(&rest.join("&"))) {
        Ok((limit, values)) => super::api::list_entries(&state, &name, limit, values).await.map(|l| (l, limit)),
        Err(e) => Err(e),
    };
    let mut body = String::from("<section id=\"cache\" data-live>");
    let stats = state.ctx().cluster.caches().stats().await.into_iter().find(|c| c.name == name);
    if let Some(c) = &stats {
        body.push_str(&format!(
            "<p id=\"cache-summary\">On this node: {} entries, {} bytes; {}; {} evicted, {} expired.</p>",
            c.entries,
            c.bytes,
            esc(&c.bounds.as_ref().map(|b| b.summary()).unwrap_or_else(|| "unbounded".into())),
            count_or_dash(c.evictions),
            count_or_dash(c.expiries),
        ));
    }
    let mut live = true;
    match listing {
        Err(e) => body.push_str(&format!("<p class=\"warn\">{}</p>", esc(e.message()))),
        Ok((listing, limit)) => {
            live = !listing.values;
            let link = format!("/cache?name={}&limit={limit}", segment(&name));
            body.push_str(&format!(
                "<p id=\"cache-shown\">The first {} of {} keys, in order. {}</p>",
                listing.entries.len(),
                listing.total,
                match listing.values {
                    true => format!(
                        "Values were read (each a use: a hit, and its max idle time starts again); this page no longer refreshes itself. <a href=\"{}\">Times only</a>.",
                        esc(&link)
                    ),
                    false => format!(
                        "<a href=\"{}\">Show values</a> (reads each entry: a hit, and its max idle time starts again).",
                        esc(&format!("{link}&values"))
                    ),
                }
            ));
            if let Some(why) = &listing.times_unknown {
                body.push_str(&format!("<p class=\"warn\" id=\"times-unknown\">No expiry times: {}</p>", esc(why)));
            }
            body.push_str("<table id=\"entries-table\"><tr><th>Key</th><th>Expires</th><th>Time left</th>");
            if listing.values {
                body.push_str("<th>Bytes</th><th>Value</th>");
            }
            body.push_str("</tr>");
            for e in &listing.entries {
                let (expires, left) = match (e.expires_at_ms, e.time_left_ms) {
                    (Some(at), Some(left)) => (crate::text::local_time(at), crate::text::duration_ms(left)),
                    _ if listing.times_unknown.is_some() => ("unknown".to_string(), "-".to_string()),
                    _ => ("never".to_string(), "-".to_string()),
                };
                body.push_str(&format!(
                    "<tr data-key=\"{k}\"><td>{k}{}</td><td class=\"expires\">{}</td><td class=\"time-left\">{}</td>",
                    if e.binary { " <span class=\"muted\">(bytes)</span>" } else { "" },
                    esc(&expires),
                    esc(&left),
                    k = esc(&e.key),
                ));
                if listing.values {
                    body.push_str(&format!(
                        "<td>{}</td><td>{}</td>",
                        e.bytes.map_or_else(|| "-".to_string(), |b| b.to_string()),
                        esc(e.value.as_deref().unwrap_or("-")),
                    ));
                }
                body.push_str("</tr>");
            }
            body.push_str("</table>");
        }
    }
    body.push_str("</section>");
    let watch = match live {
        true => format!("/api/caches/{}", segment(&name)),
        false => String::new(),
    };
    page(&title, "/node", &watch, viewer, &body)
}

fn plugins_table(records: &[crate::plugins::registry::PluginRecord], actions: bool) -> String {
    if records.is_empty() {
        return "<p id=\"no-plugins\">No plugin files in plugins/.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"plugins-table\"><tr><th>File</th><th>Plugin</th><th>Version</th><th>State</th><th>Signer</th><th>Reason</th>",
    );
    if actions {
        out.push_str("<th>Actions</th>");
    }
    out.push_str("</tr>");
    for r in records {
        let file = file_name(&r.file);
        out.push_str(&format!(
            "<tr data-file=\"{f}\"><td>{f}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"signer\">{}</td><td>{}</td>",
            esc(r.id.as_deref().unwrap_or("-")),
            r.version.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            badge(&r.state.to_string()),
            esc(&r.signature.as_ref().map(|s| s.summary()).unwrap_or_else(|| "-".into())),
            esc(r.reason.as_deref().unwrap_or("")),
            f = esc(&file),
        ));
        if actions {
            let present = r.state != PluginState::Retired || r.reason.as_deref() != Some("its file was removed");
            if present {
                out.push_str(&format!(
                    "<td><button type=\"button\" data-replace=\"{f}\">replace…</button> \
                     <button type=\"button\" data-remove=\"{f}\">remove</button></td>",
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
pub(super) async fn plugins_page(
    State(state): State<AdminState>,
    Extension(viewer): Extension<Viewer>,
) -> Html<String> {
    let records = state.ctx().plugins.records();
    let mut body = String::from(
        "<form id=\"upload\"><label>Upload a plugin (.so) <input type=\"file\" id=\"plugin-file\" accept=\".so\"></label> \
         <label>its signature (.minisig, optional; also sent with replace…) <input type=\"file\" id=\"signature-file\" accept=\".minisig\"></label> \
         <button type=\"submit\">upload</button> <small>A file with the name of an existing one replaces it (a hot upgrade).</small></form>\
         <input type=\"file\" id=\"replace-file\" accept=\".so\" hidden>",
    );
    body.push_str("<section id=\"plugins\" data-live>");
    body.push_str(&plugins_table(&records, true));
    body.push_str("</section>");
    page("Plugins", "/plugins", "/api/plugins", viewer, &body)
}

/// `GET /properties`: the values in force, and the file to edit.
pub(super) async fn properties_page(
    State(state): State<AdminState>,
    Extension(viewer): Extension<Viewer>,
) -> Html<String> {
    let mut body = String::new();
    match properties_view(&state).await {
        Err(e) => body.push_str(&format!("<p class=\"warn\">{}</p>", esc(e.message()))),
        Ok(view) => {
            body.push_str("<h2>In force</h2><section id=\"effective\" data-live><table id=\"effective-table\"><tr><th>Key</th><th>Value</th></tr>");
            for (k, v) in &view.effective {
                let pending = view.pending_restart.get(k).map(|p| {
                    format!(" <span class=\"badge pending\" title=\"stored in the file; used from the next start\">pending restart: {}</span>", esc(p))
                });
                body.push_str(&format!(
                    "<tr data-key=\"{k}\"><td>{k}</td><td>{}{}</td></tr>",
                    esc(v),
                    pending.unwrap_or_default(),
                    k = esc(k)
                ));
            }
            for (k, p) in view.pending_restart.iter().filter(|(k, _)| !view.effective.contains_key(*k)) {
                body.push_str(&format!(
                    "<tr data-key=\"{k}\"><td>{k}</td><td>(default) <span class=\"badge pending\">pending restart: {}</span></td></tr>",
                    esc(p),
                    k = esc(k)
                ));
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
    page("Properties", "/properties", "/api/properties", viewer, &body)
}

/// Where a login may send the browser next: a path on this node, else `/`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains(['\\', '\r', '\n']) => n.to_string(),
        _ => "/".to_string(),
    }
}

/// The login form; `message` says why it is shown, `next` where to go after.
pub(super) fn login_page(message: &str, next: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>clusterhost: log in</title>\
         <link rel=\"stylesheet\" href=\"/console.css\"></head><body>{}<main><h1>Log in</h1><p id=\"message\" class=\"error\">{}</p>\
         <form class=\"login\" method=\"post\" action=\"/login\"><label>admin token \
         <input id=\"token\" name=\"token\" type=\"password\" size=\"30\" autocomplete=\"off\" autofocus></label>\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><button id=\"login\" type=\"submit\">log in</button></form>\
         <p>The token is the first line of the node's token file (admin.token.file, default conf/admin.token in its home). \
         Logging in opens a session on this node for this browser; the token itself is not kept.</p></main></body></html>",
        nav("", Viewer::default()),
        esc(message),
        esc(&local_path(Some(next))),
    )
}

/// `GET /login[?next=PATH]`: the login form.
pub(super) async fn login_form(Query(query): Query<HashMap<String, String>>) -> Html<String> {
    Html(login_page("", &local_path(query.get("next").map(String::as_str))))
}

/// Decodes `application/x-www-form-urlencoded` text.
fn form_fields(body: &[u8]) -> HashMap<String, String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (b'+', _, _) => out.push(b' '),
                (b'%', Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                (b, _, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (!k.is_empty()).then(|| (decode(k), decode(v)))
        })
        .collect()
}

fn session_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}"))
        .expect("a cookie name with a port and a hex session id make a valid header value")
}

/// `POST /login`, form `token=…&next=…`: a right token opens a session (an
/// HttpOnly, SameSite=Strict cookie holding a random id, never the token)
/// and goes on to `next`; a wrong one shows the form again with `403`.
pub(super) async fn login(State(state): State<AdminState>, request: Request) -> Response {
    let cap = state.shared.limits.body_cap();
    let body = match CappedBody::new(request.into_body(), cap, axum::http::Method::POST, "/login").read_all().await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let fields = form_fields(&body);
    let next = local_path(fields.get("next").map(String::as_str));
    let file = &state.shared.token_file;
    let expected = super::token::read(file).ok();
    let given = fields.get("token").map(|t| t.trim()).unwrap_or_default();
    let Some(expected) = expected.filter(|e| !given.is_empty() && super::auth::constant_time_eq(given, e)) else {
        let message = format!(
            "that is not the node's admin token; enter the first line of {} (a new token there ends every session)",
            file.display()
        );
        tracing::info!(status = 403, "console login refused: a wrong token");
        return (StatusCode::FORBIDDEN, Html(login_page(&message, &next))).into_response();
    };
    match state.shared.sessions.open(&expected) {
        Ok(id) => {
            tracing::info!("console login: a session was opened");
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(header::SET_COOKIE, session_cookie(&state.shared.cookie, &id, None));
            response
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not open a console session: no randomness from /dev/urandom ({e})"),
        )
        .into_response(),
    }
}

/// `POST /logout`: ends the session and clears its cookie.
pub(super) async fn logout(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(id) = super::auth::cookie(&headers, &state.shared.cookie) {
        state.shared.sessions.close(&id);
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(&state.shared.cookie, "", Some(0)));
    response
}

/// `GET /console.css`.
pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// `GET /console.js`.
pub(super) async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

const SCRIPT: &str = r#"// clusterhost console: live sections, writes through the JSON API.
// Writes ride on the login session (an HttpOnly cookie this script cannot
// read); every URL part that comes from data is encoded with encodeURIComponent.
'use strict';
function say(text, ok) {
  const m = document.getElementById('message');
  if (m) { m.textContent = text; m.className = ok ? 'ok' : 'error'; }
}
async function call(method, url, body, headers) {
  const response = await fetch(url, { method, body, headers: headers || {}, credentials: 'same-origin' });
  let json = {};
  try { json = await response.json(); } catch (e) { json = { error: 'the node sent no JSON (HTTP ' + response.status + ')' }; }
  if (response.status === 401) throw new Error((json.error || 'the node asks for the admin token') + ' (use the log in link above)');
  if (!response.ok) throw new Error(json.error || ('HTTP ' + response.status));
  return json;
}
async function act(method, url, body, done, headers) {
  try { await call(method, url, body, headers); say(done, true); }
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
// Times as a person reads them: the browser's local date and time to the ms.
function localTime(ms) {
  const d = new Date(ms), p = (n, w) => String(n).padStart(w || 2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' +
    p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
}
// The timeline: the node's events from its event stream (history first,
// then live; the browser resumes with Last-Event-ID after a break).
const timeline = document.getElementById('timeline');
function addLine(cls, when, label, text, seq) {
  const li = document.createElement('li');
  li.className = cls;
  if (seq) li.dataset.seq = seq;
  const t = document.createElement('time');
  t.textContent = when;
  const b = document.createElement('span');
  b.className = 'badge';
  b.textContent = label;
  const x = document.createElement('span');
  x.textContent = text;
  li.append(t, b, x);
  timeline.prepend(li);
  while (timeline.children.length > 500) timeline.lastElementChild.remove();
}
if (timeline && window.EventSource) {
  const state = document.getElementById('timeline-state');
  const source = new EventSource(timeline.dataset.stream);
  source.onopen = () => { state.textContent = 'live: new events appear at the top'; };
  source.onerror = () => { state.textContent = 'the event stream is interrupted; reconnecting…'; };
  source.onmessage = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch (err) { return; }
    if (timeline.querySelector('[data-seq="' + e.seq + '"]')) return;
    addLine('kind-' + e.kind, localTime(e.at_ms), e.kind.replace(/_/g, ' '), e.text, e.seq);
    document.body.dataset.events = String(timeline.children.length);
  };
  for (const kind of ['missed', 'lagged', 'closing']) {
    source.addEventListener(kind, (m) => {
      let g = {};
      try { g = JSON.parse(m.data); } catch (err) { g = { reason: m.data }; }
      addLine('gap', localTime(Date.now()), kind, g.reason || '');
    });
  }
}
// The charts: the node's samples (one a second, the last 10 minutes),
// drawn as inline SVG, polled: they are figures, not events.
function draw(svg, samples) {
  const field = svg.dataset.field, W = 600, H = 120, L = 44, B = 22;
  const values = samples.map((s) => s[field] || 0);
  const max = Math.max(1, ...values);
  const t0 = samples.length ? samples[0].at_ms : 0, t1 = samples.length ? samples[samples.length - 1].at_ms : 1;
  const x = (t) => L + (W - L - 4) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const y = (v) => 4 + (H - B - 4) * (1 - v / max);
  const ns = 'http://www.w3.org/2000/svg';
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  svg.replaceChildren();
  el('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B });
  el('line', { class: 'axis', x1: L, y1: 4, x2: L, y2: H - B });
  el('text', { x: 2, y: 18 }, String(max));
  el('text', { x: 2, y: H - B }, '0');
  if (samples.length) {
    el('text', { x: L, y: H - 2 }, localTime(t0).slice(11, 19));
    el('text', { x: W - 2, y: H - 2, 'text-anchor': 'end' }, localTime(t1).slice(11, 19));
  }
  if (svg.hasAttribute('data-bars')) {
    samples.forEach((s, i) => { if (values[i] > 0) el('rect', { class: 'bar', x: x(s.at_ms) - 2, y: y(values[i]), width: 4, height: H - B - y(values[i]) }); });
  } else {
    el('polyline', { class: 'line', points: samples.map((s, i) => x(s.at_ms).toFixed(1) + ',' + y(values[i]).toFixed(1)).join(' ') });
    if (samples.length) { const i = samples.length - 1; el('circle', { class: 'dot', cx: x(samples[i].at_ms), cy: y(values[i]), r: 3 }); }
  }
  const cap = svg.parentElement.querySelector('figcaption');
  if (cap && samples.length && svg.hasAttribute('data-bars')) cap.dataset.total = String(values.reduce((a, b) => a + b, 0));
  else if (cap && samples.length) cap.dataset.now = String(values[values.length - 1]);
  svg.dataset.points = String(samples.length);
}
const charts = document.getElementById('charts');
async function drawCharts() {
  try {
    const view = await (await fetch(charts.dataset.samples)).json();
    for (const svg of charts.querySelectorAll('svg[data-field]')) draw(svg, view.samples);
  } catch (e) { /* the node may be restarting: the next tick tries again */ }
}
if (charts) { drawCharts(); setInterval(drawCharts, 2000); }
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
  if (t.dataset && t.dataset.remove) {
    const name = t.dataset.remove;
    act('DELETE', '/api/plugins/' + encodeURIComponent(name), null, name + ' removed');
  } else if (t.dataset && t.dataset.replace) {
    const input = document.getElementById('replace-file');
    input.dataset.name = t.dataset.replace;
    input.click();
  } else if (t.id === 'save-properties') {
    act('PUT', '/api/properties', document.getElementById('properties-text').value, 'properties saved; the node reloads them');
  }
});
// The plugin's detached signature, when one is chosen, rides along in the
// x-clusterhost-signature header (base64 of the .minisig file's bytes).
async function upload(name, file) {
  say('uploading ' + name + '…', true);
  const sig = document.getElementById('signature-file');
  const headers = {};
  if (sig && sig.files.length) {
    const bytes = new Uint8Array(await sig.files[0].arrayBuffer());
    headers['x-clusterhost-signature'] = btoa(String.fromCharCode(...bytes));
    sig.value = '';
  }
  act('POST', '/api/plugins?name=' + encodeURIComponent(name), file, name + ' uploaded', headers);
}
const form = document.getElementById('upload');
if (form) form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = document.getElementById('plugin-file');
  if (!input.files.length) { say('choose a .so file first', false); return; }
  upload(input.files[0].name, input.files[0]);
});
"#;
