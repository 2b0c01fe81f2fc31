package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consoleTab is a tab on the operator console.
type consoleTab struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots: console-<name>.png
}

func openConsole(t *testing.T, browser context.Context, in *Instance) *consoleTab {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	ctx, cancelTimeout := context.WithTimeout(tab, 4*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel() })
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			t.Logf("page: %s", m.Text)
		}
	}()
	dir := os.Getenv("TRAVERSE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &consoleTab{t: t, ctx: ctx, dir: dir}
	c.do(chromedp.EmulateViewport(1440, 1000), chromedp.Navigate(in.Issuer+"/console/"))
	return c
}

func (c *consoleTab) do(actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	if err := chromedp.Do(c.ctx, actions...); err != nil {
		c.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into T.
func eval[T any](c *consoleTab, expr string) T {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		c.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate until it is true.
func (c *consoleTab) waitFor(what, predicate string, d time.Duration) {
	c.t.Helper()
	_, err := chromedp.Run(c.ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		c.screenshot("failed")
		c.t.Fatalf("waiting for %s (%s): %v", what, predicate, err)
	}
}

func (c *consoleTab) screenshot(name string) {
	c.t.Helper()
	png, err := chromedp.Run(c.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		c.t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(c.dir, "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		c.t.Error(err)
	}
	c.t.Logf("screenshot %s", path)
}

func (c *consoleTab) signIn(sid, secret string) {
	c.t.Helper()
	c.waitFor("the sign-in form", `!document.getElementById("signin-view").hidden`, 20*time.Second)
	c.do(chromedp.SetValue(chromedp.CSS("#signin-sid"), sid), chromedp.SetValue(chromedp.CSS("#signin-secret"), secret))
	c.do(chromedp.Click(chromedp.CSS("#signin-submit")))
	c.waitFor("the signed-in console", fmt.Sprintf(`document.body.dataset.signedIn === %q`, sid), 20*time.Second)
}

func (c *consoleTab) tab(name string) {
	c.t.Helper()
	c.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`#tabs button[data-tab=%q]`, name))))
}

// sessionRows are the live allocations table's rows: id -> account.
// sessionRow is one row of the sessions table.
type sessionRow struct{ ID, Account string }

// sessionRows reads the sessions table by relayed address.
func (c *consoleTab) sessionRows() map[string]sessionRow {
	return eval[map[string]sessionRow](c, `Object.fromEntries([...document.querySelectorAll("#sessions tbody tr")].map(r => [r.dataset.relayed, {ID: r.dataset.id, Account: r.dataset.account}]))`)
}

type iceRow struct {
	URI, Result, ErrorCode, Error, Relayed, RelayMs, RTT string
}

func (c *consoleTab) iceRows() []iceRow {
	return eval[[]iceRow](c, `[...document.querySelectorAll("#ice-results tbody tr")].map(r => ({
		URI: r.dataset.uri, Result: r.dataset.result, ErrorCode: r.dataset.errorCode || "",
		Error: r.cells[5].textContent, Relayed: r.cells[3].querySelector("code")?.textContent || "–", RelayMs: r.cells[2].textContent, RTT: r.cells[4].textContent}))`)
}

// postForm POSTs a form to the issuer with the primary account's auth token.
func (in *Instance) postForm(t *testing.T, path string, form url.Values) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.Issuer+path, strings.NewReader(form.Encode()))
	req.SetBasicAuth(in.AccountSid, in.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := HTTPClient()
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

// createSubaccount makes a subaccount of the instance's primary account
// with the Accounts resource.
func createSubaccount(t *testing.T, in *Instance) (sid, token string) {
	t.Helper()
	status, body := in.postForm(t, "/2010-04-01/Accounts.json", url.Values{"FriendlyName": {"Acme Rockets"}})
	var a struct {
		Sid       string `json:"sid"`
		AuthToken string `json:"auth_token"`
	}
	if status != http.StatusCreated || json.Unmarshal(body, &a) != nil || a.AuthToken == "" {
		t.Fatalf("Accounts: %d %s", status, body)
	}
	return a.Sid, a.AuthToken
}

// tokenFor mints a TURN credential for accountSid with its own auth token.
func tokenFor(t *testing.T, in *Instance, sid, authToken string) Token {
	t.Helper()
	saved := *in
	saved.AccountSid, saved.AuthToken = sid, authToken
	return saved.CreateToken(600)
}

// holdAllocations allocates n times over UDP with pion's TURN client and
// returns the relayed conns; each lasts until the test ends.
func holdAllocations(t *testing.T, in *Instance, tok Token, n int) []net.PacketConn {
	t.Helper()
	var out []net.PacketConn
	for range n {
		_, rc, err := turnClient(t, "udp", in.UDP, tok.Username, tok.Password)
		if err != nil {
			t.Fatalf("allocate: %v", err)
		}
		out = append(out, rc)
	}
	return out
}

// TestBrowserConsole drives the operator console in headless Chromium
// against the built binary: sign in, watch the allocation count rise while
// pion's client holds allocations, kill one from the table, run the ICE
// tester (every transport passes; a TLS URI whose listener is off fails with
// the browser's error), sign out, and sign in as a subaccount, which sees
// only its own session. Screenshots: console-*.png in $TRAVERSE_ARTIFACTS.
func TestBrowserConsole(t *testing.T) {
	browser := startBrowser(t)
	in := Start(t, Options{TLS: true})
	subSid, subToken := createSubaccount(t, in)
	c := openConsole(t, browser, in)

	// Sign in as the primary account.
	c.waitFor("the sign-in form", `!document.getElementById("signin-view").hidden`, 20*time.Second)
	c.screenshot("signin")
	c.signIn(in.AccountSid, in.AuthToken)
	if got := eval[string](c, `document.getElementById("who-role").textContent`); got != "primary account" {
		t.Errorf("role shown %q", got)
	}

	// The allocation count rises while pion's client holds allocations; some
	// traffic through them to an echo peer gives the bits/s chart a line.
	primaryTok := in.CreateToken(600)
	_, overTCP, err := turnClient(t, "tcp", in.TCP, primaryTok.Username, primaryTok.Password)
	if err != nil {
		t.Fatalf("allocate over TCP: %v", err)
	}
	held := append([]net.PacketConn{overTCP}, holdAllocations(t, in, primaryTok, 2)...)
	// A refused credential, for the auth refusals chart.
	if _, _, err := turnClient(t, "udp", in.UDP, primaryTok.Username, "not-the-password"); err == nil {
		t.Fatal("a wrong password allocated")
	}
	subHeld := holdAllocations(t, in, tokenFor(t, in, subSid, subToken), 1)
	peer := FreeUDPPeer(t)
	sendSome(t, held, peer.LocalAddr(), 3*time.Second)
	c.waitFor("4 live allocations on the overview", `document.getElementById("tile-allocations").textContent === "4"`, 30*time.Second)
	if got := in.Metric("traverse_relay_allocations_active"); got != 4 {
		t.Errorf("traverse_relay_allocations_active = %v, want 4", got)
	}

	// Kill one of the primary's sessions from the table.
	c.tab("sessions")
	c.waitFor("4 rows in the sessions table", `document.querySelectorAll("#sessions tbody tr").length === 4`, 20*time.Second)
	rows := c.sessionRows()
	relayed := held[0].LocalAddr().String()
	if rows[relayed].Account != in.AccountSid || rows[subHeld[0].LocalAddr().String()].Account != subSid {
		t.Fatalf("sessions table %v: want %s under %s and the subaccount's", rows, relayed, in.AccountSid)
	}
	victim := rows[relayed].ID
	c.screenshot("sessions")
	kill := fmt.Sprintf(`#sessions tr[data-id=%q] button.kill`, victim)
	c.do(chromedp.Click(chromedp.CSS(kill))) // arms it
	c.do(chromedp.Click(chromedp.CSS(kill))) // confirms
	c.waitFor("the killed session to leave the table", fmt.Sprintf(`!document.querySelector('#sessions tr[data-id=%q]') && document.querySelectorAll("#sessions tbody tr").length === 3`, victim), 20*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for in.Metric("traverse_relay_allocations_active") != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("traverse_relay_allocations_active = %v after the kill, want 3", in.Metric("traverse_relay_allocations_active"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The ICE tester: every TURN URI of this server passes.
	c.tab("ice")
	c.do(chromedp.Click(chromedp.CSS("#ice-run")))
	c.waitFor("the ICE tester to finish", `!!document.body.dataset.iceDone`, 2*time.Minute)
	results := c.iceRows()
	transports := map[string]bool{}
	for _, r := range results {
		t.Logf("ICE tester: %s: %s, relay candidate %s, relayed %s, RTT %s %s", r.URI, r.Result, r.RelayMs, r.Relayed, r.RTT, r.Error)
		switch {
		case strings.HasPrefix(r.URI, "stun:"):
			if r.Result != "skipped" {
				t.Errorf("%s: %s, want skipped", r.URI, r.Result)
			}
		case r.Result != "pass":
			t.Errorf("%s: %s: %s", r.URI, r.Result, r.Error)
		default:
			transports[strings.SplitN(r.URI, ":", 2)[0]+" "+r.URI[strings.LastIndex(r.URI, "=")+1:]] = true
			if !strings.HasPrefix(r.Relayed, "127.0.0.1:") || r.RTT == "–" || r.RelayMs == "–" {
				t.Errorf("%s passed without relayed address, time or RTT: %+v", r.URI, r)
			}
		}
	}
	for _, want := range []string{"turn udp", "turn tcp", "turns tcp"} {
		if !transports[want] {
			t.Errorf("no passing %s URI among %+v", want, results)
		}
	}
	c.screenshot("ice")

	// Manual mode: a turns: URI whose TLS listener is off fails with the
	// browser's own icecandidateerror; the UDP URI beside it still passes.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	off := "turns:127.0.0.1:" + fmt.Sprint(closed.Addr().(*net.TCPAddr).Port) + "?transport=tcp"
	_ = closed.Close()
	tok := in.CreateToken(600)
	c.do(chromedp.Click(chromedp.CSS("#ice-manual > summary")))
	c.do(chromedp.SetValue(chromedp.CSS("#manual-uris"), off+"\n"+turnURI(in, "udp")),
		chromedp.SetValue(chromedp.CSS("#manual-username"), tok.Username),
		chromedp.SetValue(chromedp.CSS("#manual-credential"), tok.Password))
	c.do(chromedp.Click(chromedp.CSS("#manual-run")))
	c.waitFor("the manual test to finish", `!!document.body.dataset.iceDone`, 2*time.Minute)
	manual := c.iceRows()
	if len(manual) != 2 {
		t.Fatalf("manual mode rows %+v", manual)
	}
	t.Logf("TLS listener off: %+v", manual[0])
	if manual[0].URI != off || manual[0].Result != "fail" || manual[0].Error == "" {
		t.Errorf("TLS with its listener off: %+v, want a failure with the error", manual[0])
	}
	if manual[0].ErrorCode != "" && !strings.Contains(manual[0].Error, manual[0].ErrorCode) {
		t.Errorf("the error text %q does not show the icecandidateerror code %s", manual[0].Error, manual[0].ErrorCode)
	}
	if manual[1].Result != "pass" {
		t.Errorf("UDP beside it: %+v", manual[1])
	}
	c.screenshot("ice-tls-off")

	// Back on the overview, with some history in the charts.
	sendSome(t, held[1:], peer.LocalAddr(), 2*time.Second)
	c.tab("overview")
	c.waitFor("3 live allocations on the overview", `document.getElementById("tile-allocations").textContent === "3"`, 30*time.Second)
	c.waitFor("the refusal on the auth chart", `document.querySelector("#chart-auth .u-legend").textContent.includes("turn bad password")`, 30*time.Second)
	c.waitFor("the certificate row", `document.querySelectorAll("#certs tbody tr td code").length === 1`, 20*time.Second)
	c.screenshot("overview")

	// Sign out: the page is back at sign-in and the API refuses the old cookie.
	c.do(chromedp.Click(chromedp.CSS("#signout")))
	c.waitFor("the sign-in form after sign-out", `!document.getElementById("signin-view").hidden`, 20*time.Second)
	if got := eval[int](c, `fetch("api/sessions").then(r => r.status)`); got != http.StatusUnauthorized {
		t.Errorf("GET api/sessions after sign-out: %d, want 401", got)
	}

	// The subaccount sees its own session only, and no server-wide status.
	c.signIn(subSid, subToken)
	c.tab("sessions")
	c.waitFor("the subaccount's session", `document.querySelectorAll("#sessions tbody tr").length === 1`, 20*time.Second)
	rows = c.sessionRows()
	if len(rows) != 1 || rows[subHeld[0].LocalAddr().String()].Account != subSid {
		t.Errorf("subaccount's sessions table %v, want only its own allocation", rows)
	}
	for _, h := range held {
		if _, ok := rows[h.LocalAddr().String()]; ok {
			t.Errorf("the subaccount sees the primary's session %s", h.LocalAddr())
		}
	}
	if got := eval[int](c, `fetch("api/metrics").then(r => r.status)`); got != http.StatusForbidden {
		t.Errorf("subaccount GET api/metrics: %d, want 403", got)
	}
	c.screenshot("subaccount")
}

// sendSome writes 1 KB datagrams through each relayed conn to peer, 50 per
// second each, for d, and drains the echoes.
func sendSome(t *testing.T, conns []net.PacketConn, peer net.Addr, d time.Duration) {
	t.Helper()
	payload := make([]byte, 1000)
	for _, rc := range conns {
		go func() {
			buf := make([]byte, 1500)
			for {
				_ = rc.SetReadDeadline(time.Now().Add(d + time.Second))
				if _, _, err := rc.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		for _, rc := range conns {
			if _, err := rc.WriteTo(payload, peer); err != nil {
				t.Errorf("relay write: %v", err)
				return
			}
		}
	}
}
