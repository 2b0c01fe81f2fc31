// Small formatting and DOM helpers. Text always goes in through
// textContent: usernames and addresses come from the network.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function bits(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function bytes(v) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function rate(v) {
  if (v === null || v === undefined) return "–";
  return v >= 10 ? v.toFixed(0) : v.toFixed(2).replace(/\.?0+$/, "") || "0";
}

export function ago(date, now = Date.now()) {
  const s = Math.max(0, Math.round((now - new Date(date).getTime()) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function until(date, now = Date.now()) {
  const s = Math.round((new Date(date).getTime() - now) / 1000);
  if (s <= 0) return "expired";
  const d = Math.floor(s / 86400);
  if (d >= 2) return `in ${d} days`;
  if (s >= 3600) return `in ${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `in ${Math.floor(s / 60)}m ${s % 60}s`;
}

export function shortSid(sid) {
  return sid && sid.length > 14 ? `${sid.slice(0, 8)}…${sid.slice(-4)}` : sid || "";
}

export function ms(v) { return v === null || v === undefined ? "–" : `${Math.round(v)} ms`; }
