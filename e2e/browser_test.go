package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/traverse/traverse/auth"
)

// chromiumPath is where Debian's chromium package (scripts/install-deps)
// puts the browser.
const chromiumPath = "/usr/bin/chromium"

// startBrowser starts headless Chromium with a fresh profile and a HOME whose
// NSS database trusts the test CA, so turns: and the HTTPS issuer are
// verified as a user's browser would verify them. It returns a context to
// open tabs in; the browser ends with the test.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v: run scripts/install-deps", chromiumPath, err)
	}
	certutil, err := exec.LookPath("certutil")
	if err != nil {
		t.Fatalf("certutil (Debian libnss3-tools) not found: run scripts/install-deps")
	}
	home := t.TempDir()
	nssdb := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(nssdb, 0o700); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(home, "e2e-ca.pem")
	if err := os.WriteFile(caFile, CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + nssdb, "--empty-password"},
		{"-A", "-d", "sql:" + nssdb, "-t", "C,,", "-n", "traverse-e2e", "-i", caFile},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		// The browser gets HOME (for the NSS database) and PATH, not the
		// test's environment.
		chromedp.NoInheritEnv,
		chromedp.Env("HOME="+home, "PATH="+os.Getenv("PATH"), "TMPDIR="+home),
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.WindowSize(960, 1100),
	}
	for _, f := range []string{"headless", "no-sandbox", "disable-gpu", "disable-quic", "no-first-run",
		"disable-background-networking", "disable-component-update", "disable-sync",
		"use-fake-device-for-media-stream", "use-fake-ui-for-media-stream"} {
		opts = append(opts, chromedp.Flag(f, true))
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		cancelAlloc()
	})
	// The first action starts the browser, which lives as long as the context
	// of that action, so it gets ctx itself; the allocator bounds the start.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// servePage serves testdata/ and, at POST /ice-servers, ice: the part of an
// application's backend that hands ICE servers to its web page.
func servePage(t *testing.T, ice http.HandlerFunc) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(os.DirFS("testdata")))
	mux.Handle("POST /ice-servers", ice)
	srv := httptest.NewServer(mux) // 127.0.0.1:0
	t.Cleanup(srv.Close)
	return srv.URL
}

// tokensProxy calls the Tokens resource with the account's auth token, which
// never reaches the browser, and answers with the one ice_servers entry for
// ?transport=, passed through mutate when it is not nil.
func tokensProxy(in *Instance, mutate func(ICEServer) ICEServer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, err := fetchToken(r.Context(), in)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		s, err := pickICEServer(tok.ICEServers, turnURI(in, r.URL.Query().Get("transport")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if mutate != nil {
			s = mutate(s)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ice_servers": []ICEServer{s}})
	}
}

// pageCase is runCase's argument in testdata/webrtc.js.
type pageCase struct {
	Name      string    `json:"name"`
	ICE       pageFetch `json:"ice"`
	Expect    string    `json:"expect"` // "connected" or "failed"
	Seconds   int       `json:"seconds"`
	TimeoutMs int       `json:"timeoutMs"`
	// Bursts of data-channel messages to echo once connected (the interop
	// matrix); none when empty.
	Bursts []pageBurst `json:"bursts,omitempty"`
}

type pageBurst struct {
	Name string `json:"name"`
	N    int    `json:"n"`
	Gap  int    `json:"gap"` // ms between messages
}

type pageFetch struct {
	URL  string         `json:"url"`
	Init map[string]any `json:"init,omitempty"`
}

// pageSummary is what runCase reports (a subset; the artefact has it all).
type pageSummary struct {
	Name            string
	OK              bool
	Error           string
	ICEState        []string
	Pairs           []*pagePair
	ICEHistory      [][]string
	Echo            string
	LocalCandidates []struct {
		PC   int
		Type string
	}
	CandidateErrors []struct {
		PC        int
		URL       string
		ErrorCode int
		ErrorText string
	}
	Before, After *struct{ Video, Audio *pageInbound }
	Bursts        []struct {
		Mode, Burst  string
		Sent, Echoed int
	}
}

type pagePair struct {
	Local, Remote            pageCandidate
	BytesSent, BytesReceived uint64
}

type pageCandidate struct {
	Type, Protocol, RelayProtocol, Address string
	Port                                   int
}

func (c pageCandidate) String() string {
	proto := c.Protocol
	if c.RelayProtocol != "" {
		proto += " via " + c.RelayProtocol
	}
	return fmt.Sprintf("%s %s:%d (%s)", c.Type, c.Address, c.Port, proto)
}

type pageInbound struct {
	BytesReceived, PacketsReceived, FramesDecoded uint64
}

// runPage opens the test page in a new tab, runs c, saves a screenshot and the
// summary under dir, and returns the summary.
func runPage(t *testing.T, browser context.Context, pageURL, dir string, c pageCase) pageSummary {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(tab, time.Duration(c.TimeoutMs)*time.Millisecond+time.Duration(c.Seconds)*time.Second+30*time.Second)
	defer cancelTimeout()

	consoleDone := make(chan struct{})
	console := chromedp.Console(ctx)
	go func() {
		defer close(consoleDone)
		for m, err := range console {
			if err != nil {
				return
			}
			t.Logf("page: %s", m.Text)
		}
	}()
	defer func() { cancelTimeout(); cancel(); <-consoleDone }()

	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL+"/webrtc.html")); err != nil {
		t.Fatalf("open test page: %v", err)
	}
	arg, _ := json.Marshal(c)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte]("runCase("+string(arg)+")", chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("runCase: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
	} else if err := os.WriteFile(filepath.Join(dir, c.Name+".png"), png, 0o644); err != nil {
		t.Error(err)
	}
	var pretty map[string]any
	_ = json.Unmarshal(raw, &pretty)
	out, _ := json.MarshalIndent(pretty, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, c.Name+".json"), out, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("artefacts: %s/%s.{png,json}", dir, c.Name)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void]("closeAll()")); err != nil {
		t.Errorf("closeAll: %v", err)
	}

	var s pageSummary
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("runCase summary %s: %v", raw, err)
	}
	return s
}

// checkConnected asserts what a successful call through the relay shows in
// getStats(): relay/relay on both sides, the wanted relay protocol, the data
// channel echo, and inbound audio and video that grew while sampled.
func checkConnected(t *testing.T, s pageSummary, relayProtocol string) {
	t.Helper()
	if !s.OK {
		t.Errorf("page reports failure: %s (ICE %v, candidate errors %+v)", s.Error, s.ICEState, s.CandidateErrors)
	}
	if len(s.Pairs) != 2 {
		t.Fatalf("page reports %d selected pairs, want 2", len(s.Pairs))
	}
	for i, p := range s.Pairs {
		if p == nil {
			t.Errorf("pc%d: no selected candidate pair", i+1)
			continue
		}
		t.Logf("pc%d selected pair: local %s -> remote %s; %d bytes sent, %d received",
			i+1, p.Local, p.Remote, p.BytesSent, p.BytesReceived)
		if p.Local.Type != "relay" || p.Remote.Type != "relay" {
			t.Errorf("pc%d: selected pair %s/%s, want relay/relay", i+1, p.Local.Type, p.Remote.Type)
		}
		if relayProtocol != "" && p.Local.RelayProtocol != relayProtocol {
			t.Errorf("pc%d: local candidate's relayProtocol %q, want %q", i+1, p.Local.RelayProtocol, relayProtocol)
		}
	}
	if s.Echo != "echo:ping from chromium" {
		t.Errorf("data channel echo %q", s.Echo)
	}
	if s.Before == nil || s.After == nil || s.Before.Video == nil || s.After.Video == nil || s.Before.Audio == nil || s.After.Audio == nil {
		t.Fatalf("no inbound-rtp stats for audio and video: before %+v after %+v", s.Before, s.After)
	}
	b, a := s.Before, s.After
	t.Logf("inbound video: %d -> %d bytes, %d -> %d frames decoded; audio: %d -> %d bytes",
		b.Video.BytesReceived, a.Video.BytesReceived, b.Video.FramesDecoded, a.Video.FramesDecoded,
		b.Audio.BytesReceived, a.Audio.BytesReceived)
	if a.Video.BytesReceived <= b.Video.BytesReceived || a.Video.FramesDecoded <= b.Video.FramesDecoded {
		t.Errorf("inbound video did not grow")
	}
	if a.Audio.BytesReceived <= b.Audio.BytesReceived {
		t.Errorf("inbound audio did not grow")
	}
}

// relayProtocols is the relayProtocol Chromium reports for the local relay
// candidate of each transport.
var relayProtocols = map[string]string{"udp": "udp", "tcp": "tcp", "tls": "tls", "tcp-on-tls-port": "tcp"}

// TestBrowserWebRTC makes a call between two relay-only RTCPeerConnections in
// headless Chromium, with fake camera and microphone, through traverse over
// each transport, with credentials the page gets from an application backend
// that calls the Tokens resource.
func TestBrowserWebRTC(t *testing.T) {
	browser := startBrowser(t)
	in := Start(t, Options{TLS: true})
	page := servePage(t, tokensProxy(in, nil))
	dir := artifactDir(t)
	t.Logf("artefacts in %s", dir)

	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			toPeer := metric(t, in, bytesToPeer)
			s := runPage(t, browser, page, dir, pageCase{
				Name: tr, ICE: pageFetch{URL: "/ice-servers?transport=" + tr, Init: map[string]any{"method": "POST"}},
				Expect: "connected", Seconds: 3, TimeoutMs: 20000,
			})
			checkConnected(t, s, relayProtocols[tr])
			relayed := metric(t, in, bytesToPeer) - toPeer
			t.Logf("%s: traverse relayed %.0f bytes to peers", tr, relayed)
			if relayed < 50_000 {
				t.Errorf("traverse_relay_bytes_total{direction=\"to_peer\"} grew by %.0f bytes during a call", relayed)
			}
		})
	}
}

// TestBrowserICEFailures shows what a Chromium user meets when something is
// wrong: the call does not connect, the page sees why where the browser says
// (icecandidateerror for a refused credential), and traverse counts the
// refusal by its reason.
//
// Chromium does not report ICE "failed" for these within a minute (measured
// with Chromium 156): with no local candidate ICE stays "new", and once the
// relay refuses the permission it stays "disconnected", end-of-candidates or
// not. So the page checks that ICE does not connect in 8 s, where a good call
// connects in under 2; TestWebRTCGoFailures checks "failed" with pion.
func TestBrowserICEFailures(t *testing.T) {
	browser := startBrowser(t)
	dir := artifactDir(t)
	t.Logf("artefacts in %s", dir)
	open, denying := Start(t, Options{}), Start(t, Options{DenyLoopback: true})
	for _, f := range failures {
		t.Run(f.name, func(t *testing.T) {
			in := open
			if f.deny {
				in = denying
			}
			page := servePage(t, tokensProxy(in, f.mutate))
			before := metric(t, in, f.series)
			s := runPage(t, browser, page, dir, pageCase{
				Name: f.name, ICE: pageFetch{URL: "/ice-servers?transport=udp", Init: map[string]any{"method": "POST"}},
				Expect: "no-connection", TimeoutMs: 8000,
			})
			after := metric(t, in, f.series)
			t.Logf("%s: ICE %v (history %v); candidate errors %+v; %s %.0f -> %.0f",
				f.name, s.ICEState, s.ICEHistory, s.CandidateErrors, f.series, before, after)
			if !s.OK {
				t.Errorf("page: %s", s.Error)
			}
			if after <= before {
				t.Errorf("%s did not grow (%.0f -> %.0f)", f.series, before, after)
			}
			relays := map[int]bool{}
			for _, c := range s.LocalCandidates {
				if c.Type == "relay" {
					relays[c.PC] = true
				}
			}
			errs := map[int]bool{}
			for _, e := range s.CandidateErrors {
				// The relay answers a refused credential with 401 (RFC 8656).
				if e.ErrorCode == 401 && e.URL == turnURI(in, "udp") {
					errs[e.PC] = true
				}
			}
			if f.deny {
				// The allocations succeed; the permissions to the other
				// side's relay address are refused.
				if !relays[1] || !relays[2] {
					t.Errorf("want a relay candidate on both sides, got %+v", s.LocalCandidates)
				}
			} else {
				if len(relays) != 0 {
					t.Errorf("relay candidates with a refused credential: %+v", s.LocalCandidates)
				}
				if !errs[1] || !errs[2] {
					t.Errorf("want a 401 icecandidateerror for %s on both sides, got %+v", turnURI(in, "udp"), s.CandidateErrors)
				}
			}
		})
	}
}

// TestBrowserIssuedICEServers is the browser-side issuance case: the page
// itself asks traverse for ICE servers with an Access Token (POST
// /v1/ice-servers, Authorization: Bearer, a CORS request from the page's
// origin to the HTTPS issuer), as a Twilio SDK client would, and then makes
// the call with every entry of the answer.
func TestBrowserIssuedICEServers(t *testing.T) {
	browser := startBrowser(t)
	page := servePage(t, http.NotFound)
	in := Start(t, Options{TLS: true, CORSOrigins: []string{page}})

	// An API key, and an Access Token signed with it, as an application
	// backend would mint for its user.
	key := createKey(t, in)
	token, err := auth.AccessToken{
		AccountSid: in.AccountSid, KeySid: key.Sid, Identity: "e2e_browser", TTL: 10 * time.Minute,
		Grants: auth.Grants{NTS: &auth.NTSGrant{}},
	}.Sign([]byte(key.Secret), time.Now())
	if err != nil {
		t.Fatal(err)
	}

	dir := artifactDir(t)
	t.Logf("artefacts in %s", dir)
	issued := `traverse_issuer_ice_servers_issued_total{token="access"}`
	before := metric(t, in, issued)
	toPeer := metric(t, in, bytesToPeer)
	s := runPage(t, browser, page, dir, pageCase{
		Name: "issued", Expect: "connected", Seconds: 3, TimeoutMs: 20000,
		ICE: pageFetch{URL: in.Issuer + "/v1/ice-servers", Init: map[string]any{
			"method": "POST", "mode": "cors",
			"headers": map[string]string{"Authorization": "Bearer " + token},
		}},
	})
	checkConnected(t, s, "")
	if got := metric(t, in, issued) - before; got != 1 {
		t.Errorf("%s grew by %.0f, want 1", issued, got)
	}
	t.Logf("issued: traverse relayed %.0f bytes to peers", metric(t, in, bytesToPeer)-toPeer)
}

type apiKey struct {
	Sid    string `json:"sid"`
	Secret string `json:"secret"`
}

// createKey creates an API key with the Keys resource.
func createKey(t *testing.T, in *Instance) apiKey {
	t.Helper()
	status, body := in.postForm(t, "/2010-04-01/Accounts/"+in.AccountSid+"/Keys.json", url.Values{"FriendlyName": {"e2e browser"}})
	var k apiKey
	if status != http.StatusCreated || json.Unmarshal(body, &k) != nil || k.Secret == "" {
		t.Fatalf("Keys: %d %s", status, body)
	}
	return k
}
