// The console's JSON API: every call is same-origin, carries the session
// cookie (HttpOnly, so this script never sees it), and every state-changing
// call carries the CSRF token the session endpoint hands out.

let csrf = "";

export function setCSRF(token) { csrf = token || ""; }

export class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch("api/" + path, init);
  let data = {};
  try { data = await res.json(); } catch { /* an empty or non-JSON answer */ }
  if (!res.ok) throw new APIError(res.status, data.error || `${res.status} ${res.statusText}`);
  return data;
}

export const api = {
  signIn: (sid, secret) => call("POST", "signin", { sid, secret }),
  session: () => call("GET", "session"),
  signOut: () => call("POST", "signout", {}),
  metrics: () => call("GET", "metrics"),
  status: () => call("GET", "status"),
  sessions: () => call("GET", "sessions"),
  kill: (id) => call("POST", `sessions/${encodeURIComponent(id)}/kill`, {}),
  usage: () => call("GET", "usage"),
  iceCredential: () => call("POST", "ice-credential", {}),
};
