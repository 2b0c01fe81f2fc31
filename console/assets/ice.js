// The ICE tester: for one TURN URI and credential, a relay-only pair of
// RTCPeerConnections in this page, connected to each other through the
// relay. It measures what an operator asks first: does a relay candidate
// come, how fast, at which address, what is the round trip through the
// relay, and when it fails, the exact icecandidateerror the browser saw.

const pings = 5;

// testURI resolves to {uri, ok, skipped, relayMs, relayed, relayProtocol,
// rttMs, errors: [{side, code, text, url}], error}.
export async function testURI(uri, username, credential, timeoutMs = 10000) {
  const res = { uri, ok: false, skipped: "", relayMs: null, relayed: "", relayProtocol: "", rttMs: null, errors: [], error: "" };
  if (!/^turns?:/i.test(uri)) {
    res.skipped = "STUN only: a relay-only test needs a TURN URI";
    return res;
  }
  const config = { iceServers: [{ urls: uri, username, credential }], iceTransportPolicy: "relay" };
  let a, b;
  try {
    a = new RTCPeerConnection(config);
    b = new RTCPeerConnection(config);
  } catch (e) {
    res.error = `RTCPeerConnection refused the URI: ${e.message}`;
    a?.close();
    return res;
  }
  const t0 = performance.now();
  let settle;
  const settled = new Promise((r) => { settle = r; });
  const wire = (from, to, side) => {
    from.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      if (side === "a" && e.candidate.type === "relay" && res.relayMs === null) {
        res.relayMs = performance.now() - t0;
        const addr = e.candidate.address?.includes(":") ? `[${e.candidate.address}]` : e.candidate.address;
        res.relayed = `${addr}:${e.candidate.port}`;
        // Chromium reports the client-to-relay transport; fall back to the URI's.
        res.relayProtocol = e.candidate.relayProtocol || (/^turns:/i.test(uri) ? "tls" : /transport=tcp/i.test(uri) ? "tcp" : "udp");
      }
      to.addIceCandidate(e.candidate).catch(() => {});
    };
    from.onicecandidateerror = (e) => {
      res.errors.push({ side, code: e.errorCode, text: e.errorText, url: e.url || uri });
    };
    from.onicegatheringstatechange = () => {
      // Gathering ended with no relay candidate: it will not come.
      if (side === "a" && from.iceGatheringState === "complete" && res.relayMs === null) settle("no-relay");
    };
    from.oniceconnectionstatechange = () => {
      if (from.iceConnectionState === "failed") settle("failed");
    };
  };
  wire(a, b, "a");
  wire(b, a, "b");
  b.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send(m.data); };
  const dc = a.createDataChannel("traverse-ice-test", { ordered: true });
  dc.onopen = () => settle("open");
  const timer = setTimeout(() => settle("timeout"), timeoutMs);
  try {
    const offer = await a.createOffer();
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(offer);
    const answer = await b.createAnswer();
    await b.setLocalDescription(answer);
    await a.setRemoteDescription(answer);
    const outcome = await settled;
    if (outcome === "open") {
      res.rttMs = await measureRTT(dc, timeoutMs);
      res.ok = res.rttMs !== null;
      if (!res.ok) res.error = "connected, but pings through the relay got no answer";
    } else {
      res.error = describe(outcome, res, timeoutMs);
    }
  } catch (e) {
    res.error = e.message || String(e);
  } finally {
    clearTimeout(timer);
    a.close();
    b.close();
  }
  return res;
}

// measureRTT sends pings over the data channel (echoed by the other side,
// both through the relay) and returns the median round trip in ms.
function measureRTT(dc, timeoutMs) {
  return new Promise((resolve) => {
    const rtts = [];
    let sent = 0;
    const timer = setTimeout(() => resolve(rtts.length ? median(rtts) : null), timeoutMs);
    const send = () => { sent = performance.now(); dc.send(`ping ${rtts.length}`); };
    dc.onmessage = () => {
      rtts.push(performance.now() - sent);
      if (rtts.length >= pings) { clearTimeout(timer); resolve(median(rtts)); } else send();
    };
    send();
  });
}

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

// describe says why a test failed, with the browser's own icecandidateerror
// code and text first: they name the cause (701 for no answer or no
// connection, 401 for a refused credential, 486 for a quota, ...).
function describe(outcome, res, timeoutMs) {
  const seen = new Set();
  const errs = [];
  for (const e of res.errors) {
    const s = `${e.code} ${e.text}`.trim();
    if (!seen.has(s)) { seen.add(s); errs.push(s); }
  }
  const why = {
    "no-relay": "no relay candidate",
    failed: res.relayMs === null ? "no relay candidate" : "relay candidates, but ICE failed between them",
    timeout: res.relayMs === null ? `no relay candidate in ${timeoutMs / 1000} s` : `not connected through the relay in ${timeoutMs / 1000} s`,
  }[outcome] || outcome;
  return errs.length ? `${errs.join("; ")} (${why})` : why;
}
