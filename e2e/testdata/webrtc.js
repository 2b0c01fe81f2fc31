'use strict';
// runCase connects two relay-only RTCPeerConnections in this tab and reports
// what getStats() says. opts:
//   name        shown on the page
//   ice         {url, init}: where to fetch ICE servers (fetch(url, init));
//               the answer has ice_servers (Twilio's shape) or iceServers
//   expect      "connected" (send media and data) or "no-connection" (ICE must
//               not connect within timeoutMs)
//   seconds     how long to sample inbound RTP once connected
//   timeoutMs   bound on every wait
// It never throws: an error becomes summary.error.

const logLines = [];
function log(...args) {
  const line = `${(performance.now() / 1000).toFixed(2)}s ${args.join(' ')}`;
  logLines.push(line);
  console.log(line);
  document.getElementById('log').textContent = logLines.slice(-30).join('\n');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout after ${ms}ms: ${what}`)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

// waitState resolves with pc's iceConnectionState once it is in one of want,
// or with "timeout:<state>".
function waitState(pc, want, ms) {
  return new Promise((resolve) => {
    const check = () => {
      if (want.includes(pc.iceConnectionState)) { done(pc.iceConnectionState); }
    };
    const timer = setTimeout(() => done('timeout:' + pc.iceConnectionState), ms);
    function done(v) { clearTimeout(timer); pc.removeEventListener('iceconnectionstatechange', check); resolve(v); }
    pc.addEventListener('iceconnectionstatechange', check);
    check();
  });
}

function toRTCIceServers(body) {
  const list = body.iceServers || body.ice_servers || [];
  return list.map((s) => {
    const out = { urls: s.urls || s.url };
    if (s.username) out.username = s.username;
    if (s.credential) out.credential = s.credential;
    return out;
  });
}

// selectedPair reads the transport's selected candidate pair and its two
// candidates from a stats report.
function selectedPair(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    report.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  }
  if (!pair) return null;
  const cand = (id) => {
    const c = report.get(id) || {};
    return { type: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol, address: c.address, port: c.port, url: c.url };
  };
  return {
    local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId),
    bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived, state: pair.state,
    currentRoundTripTime: pair.currentRoundTripTime,
  };
}

function inbound(report) {
  const out = { video: null, audio: null };
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') {
      out[s.kind] = { bytesReceived: s.bytesReceived, packetsReceived: s.packetsReceived, framesDecoded: s.framesDecoded, packetsLost: s.packetsLost };
    }
  });
  return out;
}

// statsJSON keeps the stats types a reader of the artefact cares about.
function statsJSON(report) {
  const keep = ['transport', 'candidate-pair', 'local-candidate', 'remote-candidate', 'inbound-rtp', 'outbound-rtp', 'data-channel'];
  const out = [];
  report.forEach((s) => { if (keep.includes(s.type)) out.push(s); });
  return out;
}

function render(summary) {
  document.getElementById('case').textContent = summary.name;
  const v = document.getElementById('verdict');
  const pass = summary.expect === 'connected' ? 'PASS: connected through traverse' : 'PASS: did not connect, as expected';
  v.textContent = summary.ok ? pass : `FAIL: ${summary.error || 'unexpected result'}`;
  v.className = summary.ok ? 'pass' : 'fail';
  const rows = [];
  const row = (k, val) => rows.push(`<tr><th>${k}</th><td>${val === undefined || val === null ? '—' : String(val)}</td></tr>`);
  row('ICE servers', (summary.iceServers || []).map((s) => s.urls).join('<br>'));
  row('ICE state (pc1 / pc2)', `${summary.iceState[0]} / ${summary.iceState[1]}`);
  row('ICE history', summary.iceHistory.map((h, i) => `pc${i + 1}: ${h.join(' → ')}`).join('<br>'));
  for (const [i, p] of (summary.pairs || []).entries()) {
    row(`pc${i + 1} selected pair`, p ? `local ${p.local.type} ${p.local.address}:${p.local.port} (${p.local.relayProtocol || p.local.protocol}) → remote ${p.remote.type} ${p.remote.address}:${p.remote.port}; ${p.bytesSent} B sent, ${p.bytesReceived} B received` : 'none');
  }
  row('data channel', summary.echo);
  if (summary.before && summary.after) {
    const b = summary.before, a = summary.after;
    row('video bytesReceived', `${b.video && b.video.bytesReceived} → ${a.video && a.video.bytesReceived}`);
    row('video framesDecoded', `${b.video && b.video.framesDecoded} → ${a.video && a.video.framesDecoded}`);
    row('audio bytesReceived', `${b.audio && b.audio.bytesReceived} → ${a.audio && a.audio.bytesReceived}`);
  }
  row('candidate errors', (summary.candidateErrors || []).map((e) => `pc${e.pc} ${e.errorCode} ${e.errorText} (${e.url})`).join('<br>'));
  row('local candidates', (summary.localCandidates || []).map((c) => `pc${c.pc} ${c.type} ${c.protocol} ${c.address}:${c.port}`).join('<br>'));
  document.querySelector('#results tbody').innerHTML = rows.join('');
}

// runBursts sends each burst ({name, n, gap} ms apart) of 100-byte
// messages from pc1, then from pc2, and counts the other side's echoes; a
// burst ends when all are back or none has come for 5 s.
async function runBursts(channels, echoed, bursts) {
  const out = [];
  const payload = 'x'.repeat(99);
  for (const from of [0, 1]) {
    for (const b of bursts) {
      echoed[from] = 0;
      for (let i = 0; i < b.n; i++) {
        channels[from].send('p' + payload);
        if (b.gap) await sleep(b.gap);
      }
      let last = -1, since = Date.now();
      while (echoed[from] < b.n && Date.now() - since < 5000) {
        if (echoed[from] !== last) { last = echoed[from]; since = Date.now(); }
        await sleep(20);
      }
      out.push({ mode: from === 0 ? 'pc1-first' : 'pc2-first', burst: b.name, sent: b.n, echoed: echoed[from] });
      log(`burst ${b.name} from pc${from + 1}: ${echoed[from]}/${b.n} echoed`);
    }
  }
  return out;
}

async function runCase(opts) {
  const summary = {
    name: opts.name, expect: opts.expect, ok: false, error: null, iceServers: [],
    iceState: ['new', 'new'], iceHistory: [['new'], ['new']], pairs: [], echo: null, candidateErrors: [], localCandidates: [],
    before: null, after: null, stats: null,
  };
  document.getElementById('case').textContent = opts.name;
  document.getElementById('verdict').textContent = 'running';
  const pcs = [];
  let stream = null;
  try {
    const res = await withTimeout(fetch(opts.ice.url, opts.ice.init || {}), opts.timeoutMs, 'fetch ICE servers');
    if (!res.ok) throw new Error(`ICE servers: HTTP ${res.status} ${await res.text()}`);
    const iceServers = toRTCIceServers(await res.json());
    summary.iceServers = iceServers.map((s) => ({ urls: s.urls })); // no credentials in artefacts
    log('ICE servers', iceServers.map((s) => s.urls).join(' '));

    const config = { iceServers, iceTransportPolicy: 'relay' };
    const pc1 = new RTCPeerConnection(config);
    const pc2 = new RTCPeerConnection(config);
    pcs.push(pc1, pc2);
    pcs.forEach((pc, i) => {
      const other = pcs[1 - i];
      pc.onicecandidate = (e) => {
        if (!e.candidate) {
          // Tell the other side there are no more candidates (end-of-candidates).
          log(`pc${i + 1} gathering complete`);
          other.addIceCandidate(null).catch((err) => log(`pc${2 - i} end-of-candidates: ${err}`));
          return;
        }
        summary.localCandidates.push({ pc: i + 1, type: e.candidate.type, protocol: e.candidate.protocol, address: e.candidate.address, port: e.candidate.port });
        other.addIceCandidate(e.candidate).catch((err) => log(`pc${2 - i} addIceCandidate: ${err}`));
      };
      pc.onicecandidateerror = (e) => {
        summary.candidateErrors.push({ pc: i + 1, url: e.url, errorCode: e.errorCode, errorText: e.errorText });
        log(`pc${i + 1} candidate error ${e.errorCode} ${e.errorText} ${e.url}`);
      };
      pc.oniceconnectionstatechange = () => {
        summary.iceState[i] = pc.iceConnectionState;
        summary.iceHistory[i].push(pc.iceConnectionState);
        log(`pc${i + 1} ICE ${pc.iceConnectionState}`);
      };
    });

    stream = await withTimeout(navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } }), opts.timeoutMs, 'getUserMedia');
    document.getElementById('local').srcObject = stream;
    stream.getTracks().forEach((t) => pc1.addTrack(t, stream));
    pc2.ontrack = (e) => { document.getElementById('remote').srcObject = e.streams[0]; };

    // The burst channels: negotiated up front, unordered and never
    // retransmitted, so a datagram the relay loses stays lost.
    const bursty = pcs.map((pc) => pc.createDataChannel('burst', { negotiated: true, id: 7, ordered: false, maxRetransmits: 0 }));
    const echoed = [0, 0];
    bursty.forEach((ch, i) => {
      ch.onmessage = (m) => {
        if (m.data[0] === 'p') ch.send('e' + m.data.slice(1));
        else if (m.data[0] === 'e') echoed[i]++;
      };
    });

    const dc = pc1.createDataChannel('e2e');
    pc2.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send('echo:' + m.data); };
    const echo = new Promise((resolve) => {
      dc.onopen = () => dc.send('ping from chromium');
      dc.onmessage = (m) => resolve(m.data);
    });

    await pc1.setLocalDescription(await pc1.createOffer());
    await pc2.setRemoteDescription(pc1.localDescription);
    await pc2.setLocalDescription(await pc2.createAnswer());
    await pc1.setRemoteDescription(pc2.localDescription);

    if (opts.expect === 'no-connection') {
      // Chromium does not reach "failed" here in any reasonable time: with no
      // local candidate ICE stays "new", and after the relay refuses the
      // permission it stays "disconnected". What a user meets is a call that
      // never connects, so that is what is checked, for timeoutMs.
      const states = await Promise.all(pcs.map((pc) => waitState(pc, ['connected', 'completed'], opts.timeoutMs)));
      summary.iceState = pcs.map((pc) => pc.iceConnectionState);
      summary.ok = states.every((s) => s.startsWith('timeout:'));
      if (!summary.ok) summary.error = `ICE states ${states.join('/')}: connected through a relay that should refuse`;
    } else {
      const states = await Promise.all(pcs.map((pc) => waitState(pc, ['connected', 'completed', 'failed'], opts.timeoutMs)));
      summary.iceState = states;
      if (!states.every((s) => s === 'connected' || s === 'completed')) throw new Error(`ICE states ${states.join('/')}`);
      summary.echo = await withTimeout(echo, opts.timeoutMs, 'data channel echo');
      log('data channel:', summary.echo);
      if (opts.bursts) summary.bursts = await runBursts(bursty, echoed, opts.bursts);
      // Sample once media has started to arrive, then again seconds later.
      const started = Date.now();
      for (;;) {
        summary.before = inbound(await pc2.getStats());
        const { video, audio } = summary.before;
        if (video && audio && video.bytesReceived > 0 && audio.bytesReceived > 0) break;
        if (Date.now() - started > opts.timeoutMs) throw new Error('no inbound audio and video');
        await sleep(100);
      }
      await sleep(opts.seconds * 1000);
      summary.after = inbound(await pc2.getStats());
      const a = summary.after, b = summary.before;
      summary.ok = summary.echo === 'echo:ping from chromium' &&
        a.video && b.video && a.video.bytesReceived > b.video.bytesReceived && a.video.framesDecoded > b.video.framesDecoded &&
        a.audio && b.audio && a.audio.bytesReceived > b.audio.bytesReceived;
    }
    const reports = await Promise.all(pcs.map((pc) => pc.getStats()));
    summary.pairs = reports.map(selectedPair);
    summary.stats = reports.map(statsJSON);
    if (opts.expect === 'connected' && !summary.pairs.every((p) => p && p.local.type === 'relay' && p.remote.type === 'relay')) {
      summary.ok = false;
      summary.error = 'selected pair is not relay/relay';
    }
  } catch (err) {
    summary.ok = false;
    summary.error = String(err);
    log('error:', err);
  }
  render(summary);
  // Leave the last video frame on screen for the screenshot; the Go test
  // calls closeAll() afterwards.
  window.closeAll = () => { pcs.forEach((pc) => pc.close()); if (stream) stream.getTracks().forEach((t) => t.stop()); };
  return summary;
}
