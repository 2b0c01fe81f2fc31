// The console page: sign-in, the tabs, and the refresh loop.
import { api, setCSRF, APIError } from "./api.js";
import { Charts } from "./charts.js";
import { testURI } from "./ice.js";
import { el, bits, bytes, rate, ago, until, shortSid, ms } from "./format.js";

const $ = (id) => document.getElementById(id);
const refreshEvery = 5000;

const state = { me: null, timer: 0, charts: null, sessions: [], tab: "overview" };

// ---- sign-in and session --------------------------------------------------

function showSignIn(message = "") {
  clearInterval(state.timer);
  state.me = null;
  setCSRF("");
  $("app").hidden = $("tabs").hidden = $("who").hidden = true;
  $("signin-view").hidden = false;
  $("signin-error").textContent = message;
  $("signin-secret").value = "";
  $("signin-sid").focus();
}

function showApp(me) {
  state.me = me;
  setCSRF(me.csrf_token);
  $("signin-view").hidden = true;
  $("app").hidden = $("tabs").hidden = $("who").hidden = false;
  $("who-name").textContent = me.friendly_name || "Account";
  $("who-role").textContent = me.primary ? "primary account" : "subaccount";
  $("who-role").classList.toggle("sub", !me.primary);
  $("who-sid").textContent = me.key_sid ? `${shortSid(me.account_sid)} · key ${shortSid(me.key_sid)}` : shortSid(me.account_sid);
  $("who-sid").title = me.account_sid;
  $("status-only").hidden = !me.primary;
  $("sub-overview").hidden = me.primary;
  if (me.primary && !state.charts) state.charts = new Charts();
  document.body.dataset.signedIn = me.account_sid;
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, refreshEvery);
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = $("signin-submit");
  button.disabled = true;
  $("signin-error").textContent = "";
  try {
    const me = await api.signIn($("signin-sid").value.trim(), $("signin-secret").value);
    $("signin-secret").value = "";
    showApp(me);
  } catch (err) {
    $("signin-error").textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

$("signout").addEventListener("click", async () => {
  try { await api.signOut(); } catch { /* signed out either way */ }
  document.body.dataset.signedIn = "";
  showSignIn("Signed out.");
});

// guard runs an API call; a 401 means the session ended: back to sign-in.
async function guard(fn) {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof APIError && err.status === 401) {
      document.body.dataset.signedIn = "";
      showSignIn(err.message);
      return undefined;
    }
    notice(err.message);
    return undefined;
  }
}

function notice(msg) {
  $("notice").hidden = !msg;
  $("notice").textContent = msg || "";
}

// ---- tabs -------------------------------------------------------------------

for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => selectTab(b.dataset.tab));
}

function selectTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== `tab-${tab}`;
  if (tab === "overview" && state.charts) {
    if (state.pendingMetrics) state.charts.update(state.pendingMetrics);
    state.pendingMetrics = null;
    state.charts.all().forEach((c) => c.resize());
  }
  if (tab === "usage") refreshUsage();
}

// ---- refresh loop ---------------------------------------------------------

let refreshing = false;
async function refresh() {
  if (!state.me || refreshing) return;
  refreshing = true;
  try {
    const jobs = [guard(async () => renderSessions((await api.sessions()).sessions))];
    if (state.me.primary) {
      jobs.push(guard(async () => renderMetrics(await api.metrics())));
      jobs.push(guard(async () => renderStatus(await api.status())));
    }
    await Promise.all(jobs);
    $("foot").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${refreshEvery / 1000} s`;
  } finally {
    refreshing = false;
  }
}

function last(xs) {
  for (let i = xs.length - 1; i >= 0; i--) if (xs[i] !== null && xs[i] !== undefined) return xs[i];
  return null;
}

function renderMetrics(m) {
  if (!state.me?.primary) return;
  $("tile-allocations").textContent = m.allocations.length ? String(last(m.allocations)) : "–";
  const peak = Math.max(0, ...m.allocations);
  $("tile-allocations-hint").textContent = m.allocations.length ? `peak ${peak} in the last hour` : "";
  $("tile-to").textContent = bits(last(m.to_peer_bps));
  $("tile-from").textContent = bits(last(m.from_peer_bps));
  $("tile-rate").textContent = rate(last(m.allocations_per_s));
  if (state.tab === "overview") state.charts.update(m);
  else state.pendingMetrics = m;
}

function renderStatus(st) {
  const nodes = $("nodes").tBodies[0];
  nodes.replaceChildren(...st.nodes.map((n) => {
    const share = n.ports_total ? n.ports_used / n.ports_total : 0;
    const bar = el("div", { class: "bar inline" }, el("span"));
    bar.firstChild.style.width = `${Math.max(share * 100, n.ports_used ? 1 : 0)}%`;
    return el("tr", {},
      el("td", {}, el("strong", { text: n.name })),
      el("td", {}, el("code", { text: n.addr || "–" })),
      el("td", {}, el("span", { class: `pill ${n.healthy ? "ok" : "bad"}`, text: n.healthy ? "ready" : "not ready" })),
      el("td", { class: "num", text: String(n.allocations) }),
      el("td", {}, bar, `${n.ports_used} of ${n.ports_total} (${(share * 100).toFixed(share < 0.01 && share > 0 ? 2 : 1)}%)`));
  }));
  if (st.nodes_error) nodes.append(el("tr", {}, el("td", { colSpan: 5, class: "err-text", text: st.nodes_error })));
  const used = st.nodes.reduce((s, n) => s + n.ports_used, 0);
  const total = st.nodes.reduce((s, n) => s + n.ports_total, 0);
  $("tile-ports").textContent = total ? `${(100 * used / total).toFixed(used && used / total < 0.01 ? 2 : 1)}%` : "–";
  $("tile-ports-bar").style.width = total ? `${Math.max(100 * used / total, used ? 1 : 0)}%` : "0";

  const certs = $("certs").tBodies[0];
  const now = new Date(st.now).getTime();
  certs.replaceChildren(...st.certificates.map((c) => {
    const days = (new Date(c.not_after).getTime() - now) / 86400e3;
    const cls = days < 7 ? "bad" : days < 21 ? "warn" : "ok";
    return el("tr", { title: `${c.source}; valid from ${new Date(c.not_before).toUTCString()}` },
      el("td", {}, el("code", { text: (c.names.length ? c.names : [c.subject]).join(", ") })),
      el("td", { class: "muted", text: c.issuer || "–" }),
      el("td", {}, el("span", { class: `pill ${cls}`, text: until(c.not_after, now) })));
  }));
  if (!st.certificates.length) {
    certs.append(el("tr", {}, el("td", { colSpan: 3, class: "muted", text: st.certificates_error || "TLS is off: no certificate configured." })));
  }
}

// ---- sessions ---------------------------------------------------------------

$("session-filter").addEventListener("input", () => renderSessions(state.sessions));

function renderSessions(list) {
  state.sessions = list;
  $("session-count").textContent = String(list.length);
  const q = $("session-filter").value.trim().toLowerCase();
  const shown = q ? list.filter((s) => [s.account, s.username, s.client, s.relayed, s.node].join(" ").toLowerCase().includes(q)) : list;
  const now = Date.now();
  $("sessions").tBodies[0].replaceChildren(...shown.map((s) => el("tr", { "data-id": s.id, "data-account": s.account, "data-relayed": s.relayed },
    el("td", {}, s.account ? el("code", { text: shortSid(s.account), title: s.account }) : el("span", { class: "muted", text: "static user" })),
    el("td", {}, el("code", { text: userPart(s.username, s.account), title: s.username })),
    el("td", {}, el("span", { class: "tag", text: s.transport })),
    el("td", {}, el("code", { text: s.client })),
    el("td", {}, el("code", { text: s.relayed })),
    el("td", { class: "muted", text: s.node }),
    el("td", { text: ago(s.created, now) }),
    el("td", { class: "muted", text: s.expires ? until(s.expires, now) : "never" }),
    el("td", { class: "num" }, killButton(s)))));
  $("sessions-empty").hidden = shown.length > 0;
  $("sessions-empty").textContent = list.length ? "No allocation matches the filter." : "No live allocations.";
}

// userPart shortens a TURN REST username for the table: no expiry (the
// next column shows it), and no AccountSid (the first column shows it).
function userPart(username, account) {
  const i = username.indexOf(":");
  let user = i > 0 && /^\d+$/.test(username.slice(0, i)) ? username.slice(i + 1) : username;
  if (account && user.startsWith(account + ":")) user = "…:" + user.slice(account.length + 1);
  return user;
}

// killButton asks once more before ending a call: the first click arms it.
function killButton(s) {
  let armed = 0;
  const b = el("button", { class: "kill", text: "Kill", title: `End the allocation relayed at ${s.relayed}` });
  b.addEventListener("click", async () => {
    if (!armed) {
      b.classList.add("confirm");
      b.textContent = "Confirm";
      armed = setTimeout(() => { armed = 0; b.classList.remove("confirm"); b.textContent = "Kill"; }, 4000);
      return;
    }
    clearTimeout(armed);
    b.disabled = true;
    b.textContent = "Killing…";
    await guard(async () => {
      await api.kill(s.id);
      renderSessions(state.sessions.filter((x) => x.id !== s.id));
    });
    refresh();
  });
  return b;
}

// ---- usage ----------------------------------------------------------------

async function refreshUsage() {
  const u = await guard(() => api.usage());
  if (!u) return;
  $("usage-na").hidden = u.available;
  $("usage").hidden = !u.available;
  $("usage").tBodies[0].replaceChildren(...u.days.map((d) => el("tr", {},
    el("td", { text: d.day }),
    el("td", {}, el("code", { text: shortSid(d.account), title: d.account })),
    el("td", { class: "num", text: String(d.allocations) }),
    el("td", { class: "num", text: bytes(d.bytes_to_peer) }),
    el("td", { class: "num", text: bytes(d.bytes_from_peer) }),
    el("td", { class: "num", text: d.minutes.toFixed(1) }))));
}

// ---- ICE tester -------------------------------------------------------------

const iceBody = () => $("ice-results").tBodies[0];

function iceRow(uri) {
  const row = el("tr", { "data-uri": uri, "data-result": "running" },
    el("td", {}, el("code", { text: uri })),
    el("td", {}, el("span", { class: "pill run", text: "testing…" })),
    el("td", { class: "num", text: "" }), el("td"), el("td", { class: "num" }), el("td"));
  iceBody().append(row);
  return row;
}

function fillIceRow(row, r) {
  const [, result, relay, addr, rtt, error] = row.cells;
  row.dataset.result = r.skipped ? "skipped" : r.ok ? "pass" : "fail";
  if (r.errors.length) {
    row.dataset.errorCode = String(r.errors[0].code);
    row.dataset.errorText = r.errors[0].text;
  }
  result.replaceChildren(el("span", {
    class: `pill ${r.skipped ? "skip" : r.ok ? "pass" : "fail"}`, text: r.skipped ? "skipped" : r.ok ? "pass" : "fail",
  }));
  relay.textContent = ms(r.relayMs);
  addr.replaceChildren(r.relayed ? el("code", { text: r.relayed }) : "–",
    r.relayProtocol ? el("span", { class: "tag", text: r.relayProtocol }) : "");
  if (r.relayProtocol) addr.lastChild.style.marginLeft = "6px";
  rtt.textContent = ms(r.rttMs);
  error.replaceChildren(r.skipped ? el("span", { class: "muted", text: r.skipped })
    : r.error ? el("span", { class: "err-text", text: r.error }) : "");
}

async function runICE(uris, username, credential) {
  iceBody().replaceChildren();
  $("ice-empty").hidden = true;
  const rows = uris.map(iceRow);
  for (let i = 0; i < uris.length; i++) {
    fillIceRow(rows[i], await testURI(uris[i], username, credential));
  }
  document.body.dataset.iceDone = String(Date.now());
}

async function withBusy(button, fn) {
  for (const b of [$("ice-run"), $("manual-run")]) b.disabled = true;
  const label = button.textContent;
  button.textContent = "Testing…";
  document.body.dataset.iceDone = "";
  try { await fn(); } finally {
    button.textContent = label;
    for (const b of [$("ice-run"), $("manual-run")]) b.disabled = false;
  }
}

$("ice-run").addEventListener("click", () => withBusy($("ice-run"), async () => {
  const cred = await guard(() => api.iceCredential());
  if (!cred) return;
  await runICE(cred.uris, cred.username, cred.credential);
}));

$("manual-run").addEventListener("click", () => withBusy($("manual-run"), async () => {
  const uris = $("manual-uris").value.split(/\s+/).map((s) => s.trim()).filter(Boolean);
  if (!uris.length) { notice("Paste at least one stun:, turn: or turns: URI."); return; }
  notice("");
  await runICE(uris, $("manual-username").value.trim(), $("manual-credential").value);
}));

// ---- start ----------------------------------------------------------------

(async () => {
  try {
    showApp(await api.session());
  } catch (err) {
    showSignIn(err instanceof APIError && err.status === 401 ? "" : err.message);
  }
})();
