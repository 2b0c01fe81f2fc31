package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/traverse/traverse/auth"
)

// Transports are the ways a client reaches the relay, by the names the tests
// use: TURN over UDP, over TCP, over TLS (turns:), and plain TURN over TCP on
// the TLS port, which the TLS listener also accepts.
var transports = []string{"udp", "tcp", "tls", "tcp-on-tls-port"}

// turnURI is the ice_servers URI the issuer must advertise for a transport.
func turnURI(in *Instance, transport string) string {
	switch transport {
	case "udp":
		return "turn:" + in.UDP + "?transport=udp"
	case "tcp":
		return "turn:" + in.TCP + "?transport=tcp"
	case "tls":
		return "turns:" + in.TLS + "?transport=tcp"
	case "tcp-on-tls-port":
		return "turn:" + in.TLS + "?transport=tcp"
	}
	panic("unknown transport " + transport)
}

// pickICEServer returns the one entry of servers whose urls is uri, so each
// subtest gives its peers exactly one way to reach the relay. It is an error
// for the issuer not to advertise it.
func pickICEServer(servers []ICEServer, uri string) (ICEServer, error) {
	for _, s := range servers {
		if s.URLs == uri {
			if s.Username == "" || s.Credential == "" {
				return ICEServer{}, fmt.Errorf("ice_servers entry %s has no credential", uri)
			}
			return s, nil
		}
	}
	var got []string
	for _, s := range servers {
		got = append(got, s.URLs)
	}
	return ICEServer{}, fmt.Errorf("issuer does not advertise %s; ice_servers: %v", uri, got)
}

// fetchToken calls the Tokens resource as an application backend would. Unlike
// Instance.CreateToken it returns its error, so an HTTP handler may call it.
func fetchToken(ctx context.Context, in *Instance) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		in.Issuer+"/2010-04-01/Accounts/"+in.AccountSid+"/Tokens.json", strings.NewReader(url.Values{"Ttl": {"600"}}.Encode()))
	if err != nil {
		return Token{}, err
	}
	req.SetBasicAuth(in.AccountSid, in.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := HTTPClient()
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	if err != nil {
		return Token{}, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		return Token{}, fmt.Errorf("Tokens: %d %s", res.StatusCode, body)
	}
	var tok Token
	return tok, json.Unmarshal(body, &tok)
}

// metric reads one series from the instance's /metrics, failing t (the
// calling test, which may be a subtest of the one that started in).
func metric(t *testing.T, in *Instance, series string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	res, err := client.Get(in.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("series %s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("series %s not in /metrics", series)
	return 0
}

const (
	bytesToPeer   = `traverse_relay_bytes_total{direction="to_peer"}`
	bytesFromPeer = `traverse_relay_bytes_total{direction="from_peer"}`
)

// artifactDir is where screenshots and stats summaries go: $TRAVERSE_ARTIFACTS
// if set, else a directory that lives as long as the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TRAVERSE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// trustTestCAForPion makes pion trust the test CA for turns:. pion/ice dials
// TURN over TLS with a tls.Config that has no RootCAs (and pion/webrtc exposes
// no option to give it some, nor to skip verification), so it uses Go's
// system pool. On Linux that pool is read once, from $SSL_CERT_FILE and the
// system directories, at its first use in the process; we point
// SSL_CERT_FILE at the test CA before that and check it took. Verification
// stays on.
func trustTestCAForPion(t *testing.T, in *Instance) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "e2e-ca.pem")
	if err := os.WriteFile(file, CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", file)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", in.TLS,
		&tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("the system certificate pool does not trust the test CA (was it loaded before SSL_CERT_FILE was set?): %v", err)
	}
	_ = conn.Close()
}

// pionICEServers converts Twilio-shaped entries to pion's.
func pionICEServers(servers ...ICEServer) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(servers))
	for _, s := range servers {
		out = append(out, webrtc.ICEServer{URLs: []string{s.URLs}, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// newRelayOnlyPeer makes a PeerConnection that may only use relay candidates
// from servers, with mDNS off so nothing listens beyond the TURN clients.
// failFast shortens ICE's timers (disconnected 1s, failed 2s instead of 5s
// and 25s) for the cases that must fail.
func newRelayOnlyPeer(servers []webrtc.ICEServer, failFast bool) (*webrtc.PeerConnection, error) {
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if failFast {
		se.SetICETimeouts(time.Second, 2*time.Second, 500*time.Millisecond)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	return api.NewPeerConnection(webrtc.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
}

// goPeersResult is what one run of two pion peers measured.
type goPeersResult struct {
	Pair            [2]*webrtc.ICECandidatePair
	Echo            string
	RTPSent         int
	RTPReceived     int64
	PairBytesSent   uint64 // from the offerer's nominated pair stats
	PairBytesRecved uint64
}

const (
	rtpPackets = 300
	rtpPayload = 1000
)

// runGoPeers connects two relay-only pion peers through servers, echoes a
// data-channel message and sends rtpPackets VP8-typed RTP packets from the
// first to the second. Every wait is bounded by ctx.
func runGoPeers(ctx context.Context, t *testing.T, servers []webrtc.ICEServer) (goPeersResult, error) {
	var res goPeersResult
	offerer, err := newRelayOnlyPeer(servers, false)
	if err != nil {
		return res, err
	}
	answerer, err := newRelayOnlyPeer(servers, false)
	if err != nil {
		_ = offerer.Close()
		return res, err
	}
	var readers sync.WaitGroup
	defer func() {
		// Closing ends the readers' loops; wait for them so none outlives the test.
		if err := errors.Join(offerer.Close(), answerer.Close()); err != nil {
			t.Errorf("close peers: %v", err)
		}
		readers.Wait()
	}()

	// pion calls the handlers on its own goroutines, possibly after we return,
	// so state changes are collected and logged here, not from the callbacks.
	var (
		eventsMu sync.Mutex
		events   []string
	)
	defer func() {
		eventsMu.Lock()
		defer eventsMu.Unlock()
		t.Logf("connection states: %s", strings.Join(events, ", "))
	}()
	connected := func(pc *webrtc.PeerConnection, name string) <-chan error {
		ch := make(chan error, 1)
		pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
			eventsMu.Lock()
			events = append(events, name+" "+s.String())
			eventsMu.Unlock()
			switch s {
			case webrtc.PeerConnectionStateConnected:
				select {
				case ch <- nil:
				default:
				}
			case webrtc.PeerConnectionStateFailed:
				select {
				case ch <- fmt.Errorf("%s: connection failed", name):
				default:
				}
			}
		})
		return ch
	}
	offConn, ansConn := connected(offerer, "offerer"), connected(answerer, "answerer")

	// Data channel: the answerer echoes what it receives.
	answerer.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) { _ = dc.SendText("echo:" + string(m.Data)) })
	})
	dc, err := offerer.CreateDataChannel("e2e", nil)
	if err != nil {
		return res, err
	}
	echo := make(chan string, 1)
	dc.OnOpen(func() { _ = dc.SendText("ping") })
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		select {
		case echo <- string(m.Data):
		default:
		}
	})

	// Media: a VP8 track from the offerer; the answerer counts packets.
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "e2e")
	if err != nil {
		return res, err
	}
	sender, err := offerer.AddTrack(track)
	if err != nil {
		return res, err
	}
	readers.Add(1)
	go func() { // RTCP must be read for the interceptors to run
		defer readers.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	var received atomic.Int64
	answerer.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				received.Add(1)
			}
		}()
	})

	// Signalling without trickle: each side's description carries its
	// gathered relay candidates.
	offer, err := offerer.CreateOffer(nil)
	if err != nil {
		return res, err
	}
	if err := setLocalAndGather(ctx, offerer, offer); err != nil {
		return res, fmt.Errorf("offerer: %w", err)
	}
	if err := answerer.SetRemoteDescription(*offerer.LocalDescription()); err != nil {
		return res, err
	}
	answer, err := answerer.CreateAnswer(nil)
	if err != nil {
		return res, err
	}
	if err := setLocalAndGather(ctx, answerer, answer); err != nil {
		return res, fmt.Errorf("answerer: %w", err)
	}
	if err := offerer.SetRemoteDescription(*answerer.LocalDescription()); err != nil {
		return res, err
	}
	for _, ch := range []<-chan error{offConn, ansConn} {
		select {
		case err := <-ch:
			if err != nil {
				return res, err
			}
		case <-ctx.Done():
			return res, fmt.Errorf("waiting to connect: %w", ctx.Err())
		}
	}

	select {
	case res.Echo = <-echo:
	case <-ctx.Done():
		return res, fmt.Errorf("waiting for the data-channel echo: %w", ctx.Err())
	}

	payload := make([]byte, rtpPayload)
	payload[0] = 0x10 // VP8 payload descriptor: start of partition
	for i := range rtpPackets {
		err := track.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, Marker: true, SequenceNumber: uint16(i), Timestamp: uint32(i) * 3000},
			Payload: payload,
		})
		if err != nil {
			return res, fmt.Errorf("write RTP: %w", err)
		}
		res.RTPSent++
		time.Sleep(2 * time.Millisecond) // pace like a sender, not a flood
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	settle := time.NewTimer(3 * time.Second)
	defer settle.Stop()
wait:
	for received.Load() < rtpPackets {
		select {
		case <-tick.C:
		case <-settle.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	res.RTPReceived = received.Load()

	for i, pc := range []*webrtc.PeerConnection{offerer, answerer} {
		pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil {
			return res, err
		}
		res.Pair[i] = pair
	}
	for _, s := range offerer.GetStats() {
		if p, ok := s.(webrtc.ICECandidatePairStats); ok && p.Nominated {
			res.PairBytesSent, res.PairBytesRecved = p.BytesSent, p.BytesReceived
		}
	}
	return res, nil
}

// setLocalAndGather sets desc and waits, within ctx, for ICE gathering to end.
func setLocalAndGather(ctx context.Context, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) error {
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
}

// TestWebRTCGoPeers connects two pion/webrtc peers that may only use relay
// candidates, once per transport to the relay, with credentials from the
// Tokens resource: a data channel round trip and a stream of RTP must go
// through traverse.
func TestWebRTCGoPeers(t *testing.T) {
	in := Start(t, Options{TLS: true})
	trustTestCAForPion(t, in)
	tok, err := fetchToken(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}

	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			server, err := pickICEServer(tok.ICEServers, turnURI(in, tr))
			if err != nil {
				t.Fatal(err)
			}
			toPeer := metric(t, in, bytesToPeer)

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			res, err := runGoPeers(ctx, t, pionICEServers(server))
			if err != nil {
				t.Fatal(err)
			}

			for i, side := range []string{"offerer", "answerer"} {
				p := res.Pair[i]
				if p == nil {
					t.Fatalf("%s: no selected candidate pair", side)
				}
				t.Logf("%s selected pair: local %s remote %s", side, p.Local, p.Remote)
				if p.Local.Typ != webrtc.ICECandidateTypeRelay || p.Remote.Typ != webrtc.ICECandidateTypeRelay {
					t.Errorf("%s: selected pair is %s/%s, want relay/relay", side, p.Local.Typ, p.Remote.Typ)
				}
			}
			if res.Echo != "echo:ping" {
				t.Errorf("data channel echo = %q, want %q", res.Echo, "echo:ping")
			}
			relayed := metric(t, in, bytesToPeer) - toPeer
			t.Logf("%s: RTP %d sent, %d received; nominated pair %d bytes sent, %d received; relay to_peer grew by %.0f bytes",
				tr, res.RTPSent, res.RTPReceived, res.PairBytesSent, res.PairBytesRecved, relayed)
			if res.RTPReceived < rtpPackets*95/100 {
				t.Errorf("received %d of %d RTP packets", res.RTPReceived, res.RTPSent)
			}
			if relayed < rtpPackets*rtpPayload {
				t.Errorf("relay to_peer bytes grew by %.0f, want at least the %d bytes of RTP payload", relayed, rtpPackets*rtpPayload)
			}
		})
	}
}

// failures are what a user gets wrong, and the counter traverse must move.
type failure struct {
	name   string
	deny   bool                      // start traverse with loopback peers refused
	mutate func(ICEServer) ICEServer // what the application backend gets wrong
	series string
}

var failures = []failure{
	{
		name:   "wrong_password",
		mutate: func(s ICEServer) ICEServer { s.Credential = "d3JvbmcgcGFzc3dvcmQ="; return s },
		series: `traverse_relay_auth_total{result="bad_password"}`,
	},
	{
		name: "expired",
		mutate: func(s ICEServer) ICEServer {
			// A well-signed credential whose expiry passed an hour ago.
			c, err := auth.Mint([]byte(Secret), "e2e", time.Second, time.Now().Add(-time.Hour))
			if err != nil {
				panic(err)
			}
			s.Username, s.Credential = c.Username, c.Password
			return s
		},
		series: `traverse_relay_auth_total{result="expired"}`,
	},
	{
		name:   "peer_denied",
		deny:   true,
		series: `traverse_relay_peer_denied_total{reason="builtin"}`,
	},
}

// TestWebRTCGoFailures checks that two pion peers cannot connect through
// traverse with a wrong or expired credential, or to a peer address the relay
// refuses: ICE ends "failed" and /metrics counts the refusal by reason.
func TestWebRTCGoFailures(t *testing.T) {
	open, denying := Start(t, Options{}), Start(t, Options{DenyLoopback: true})
	for _, f := range failures {
		t.Run(f.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			in := open
			if f.deny {
				in = denying
			}
			tok, err := fetchToken(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			server, err := pickICEServer(tok.ICEServers, turnURI(in, "udp"))
			if err != nil {
				t.Fatal(err)
			}
			if f.mutate != nil {
				server = f.mutate(server)
			}
			before := metric(t, in, f.series)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			states, err := runGoPeersFailing(ctx, pionICEServers(server))
			if err != nil {
				t.Fatal(err)
			}
			after := metric(t, in, f.series)
			t.Logf("%s: ICE states %v; %s %.0f -> %.0f", f.name, states, f.series, before, after)
			for i, s := range states {
				if s != webrtc.ICEConnectionStateFailed {
					t.Errorf("peer %d: ICE %s, want failed", i+1, s)
				}
			}
			if after <= before {
				t.Errorf("%s did not grow (%.0f -> %.0f)", f.series, before, after)
			}
		})
	}
}

// runGoPeersFailing connects two relay-only peers with fast ICE timers and
// returns their ICE states once both have failed or connected, or ctx ends.
//
// A refused credential fails at once: the relay answers 401 (pion/turn v4
// alone would send an unsigned 400, which pion/ice's client drops and
// retransmits for about 8 s).
func runGoPeersFailing(ctx context.Context, servers []webrtc.ICEServer) ([2]webrtc.ICEConnectionState, error) {
	var states [2]webrtc.ICEConnectionState
	var pcs [2]*webrtc.PeerConnection
	ended := make(chan int, 8)
	for i := range pcs {
		pc, err := newRelayOnlyPeer(servers, true)
		if err != nil {
			return states, err
		}
		defer pc.Close()
		pcs[i] = pc
		pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
			if s == webrtc.ICEConnectionStateFailed || s == webrtc.ICEConnectionStateConnected {
				ended <- i
			}
		})
	}
	if _, err := pcs[0].CreateDataChannel("e2e", nil); err != nil {
		return states, err
	}
	offer, err := pcs[0].CreateOffer(nil)
	if err != nil {
		return states, err
	}
	if err := setLocalAndGather(ctx, pcs[0], offer); err != nil {
		return states, err
	}
	if err := pcs[1].SetRemoteDescription(*pcs[0].LocalDescription()); err != nil {
		return states, err
	}
	answer, err := pcs[1].CreateAnswer(nil)
	if err != nil {
		return states, err
	}
	if err := setLocalAndGather(ctx, pcs[1], answer); err != nil {
		return states, err
	}
	if err := pcs[0].SetRemoteDescription(*pcs[1].LocalDescription()); err != nil {
		return states, err
	}
	for done := map[int]bool{}; len(done) < 2; {
		select {
		case i := <-ended:
			done[i] = true
		case <-ctx.Done():
			for i, pc := range pcs {
				states[i] = pc.ICEConnectionState()
			}
			return states, nil
		}
	}
	for i, pc := range pcs {
		states[i] = pc.ICEConnectionState()
	}
	return states, nil
}
