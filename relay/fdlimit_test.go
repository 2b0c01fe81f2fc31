package relay

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/internal/turntest"
)

// fdChildEnv makes the test binary serve a relay for
// TestAcceptSurvivesFDExhaustion instead of running tests.
const fdChildEnv = "TRAVERSE_FDLIMIT_CHILD"

// fdLimit is the descriptor limit the child relay runs under.
const fdLimit = 256

// runFDLimitChild serves a relay with TCP and TLS listeners, prints
// "addrs <tcp> <tls>", then "accept-errors" once an accept failed (retried
// or not), and exits
// when stdin closes.
func runFDLimitChild() int {
	cfg := testConfig()
	cfg.Relay.Limits.PendingPerIP = 0 // the parent holds every connection from one IP
	tc, err := newSelfSignedTLS()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Config: cfg, TLS: tc, Log: zap.NewNop(), Registerer: reg})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer s.Close()
	fmt.Printf("addrs %s %s\n", s.Addrs().TCP[0], s.Addrs().TLS[0])
	go func() {
		for {
			time.Sleep(10 * time.Millisecond)
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				// An accept that failed: retried, or (before the fix) the
				// listener gone.
				if n := mf.GetName(); n != "traverse_relay_accept_errors_total" && n != "traverse_relay_listeners_stopped_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					if m.GetCounter().GetValue() > 0 {
						fmt.Println("accept-errors")
						return
					}
				}
			}
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestAcceptSurvivesFDExhaustion runs a relay under `prlimit --nofile=256`,
// holds connections until its accepts fail with EMFILE, lets them go, and
// requires TCP and TLS to answer a Binding again: the accept loop backed off
// and carried on instead of dying.
func TestAcceptSurvivesFDExhaustion(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit not found (%v): run scripts/install-deps (Debian package util-linux)", err)
	}
	cmd := exec.Command(prlimit, fmt.Sprintf("--nofile=%d", fdLimit), "--", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fdChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(d time.Duration) string {
		select {
		case l := <-lines:
			return l
		case <-time.After(d):
			return ""
		}
	}
	first := next(30 * time.Second)
	var tcpAddr, tlsAddr string
	if _, err := fmt.Sscanf(first, "addrs %s %s", &tcpAddr, &tlsAddr); err != nil {
		t.Fatalf("child said %q: %v", first, err)
	}
	if !binding(t, "tcp", tcpAddr, 5*time.Second) || !binding(t, "tls", tlsAddr, 5*time.Second) {
		t.Fatal("no Binding answer before the flood")
	}

	// Hold connections until the child's accepts fail.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	exhausted := false
	for i := 0; i < fdLimit+200 && !exhausted; i++ {
		c, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		held = append(held, c)
		select {
		case l := <-lines:
			exhausted = l == "accept-errors"
		default:
		}
	}
	if !exhausted && next(10*time.Second) != "accept-errors" {
		t.Fatalf("holding %d connections never exhausted a limit of %d descriptors", len(held), fdLimit)
	}
	t.Logf("accepts failed with %d connections held under --nofile=%d", len(held), fdLimit)

	for _, c := range held {
		_ = c.Close()
	}
	held = nil
	released := time.Now()
	if !binding(t, "tcp", tcpAddr, 15*time.Second) {
		t.Fatal("TCP never answered again after the connections went")
	}
	tcpBack := time.Since(released)
	if !binding(t, "tls", tlsAddr, 15*time.Second) {
		t.Fatal("TLS never answered again after the connections went")
	}
	t.Logf("TCP answered %v and TLS %v after the held connections closed", tcpBack.Round(time.Millisecond),
		time.Since(released).Round(time.Millisecond))
}

// binding retries a STUN Binding over transport to addr until it is
// answered or within passes.
func binding(t *testing.T, transport, addr string, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var c net.Conn
		var err error
		d := &net.Dialer{Timeout: time.Second}
		if transport == "tls" {
			c, err = tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the child's self-signed certificate
		} else {
			c, err = d.Dial("tcp", addr)
		}
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		conn := turn.NewSTUNConn(c)
		server, _ := net.ResolveTCPAddr("tcp", addr)
		rc := &turntest.Client{Conn: conn, Server: server}
		res, err := rc.Request(stun.MethodBinding)
		_ = c.Close()
		if err == nil && res.Type.Class == stun.ClassSuccessResponse {
			return true
		}
		if err != nil && !strings.Contains(err.Error(), "no answer") {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return false
}

// TestFDLimitWarns: when the relay's caps need more descriptors than even
// the hard limit allows, start-up says so with the figures.
func TestFDLimitWarns(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	s := &Server{log: zap.New(core)}
	s.checkFDLimit(1 << 40)
	found := logs.FilterMessageSnippet("descriptor limit below").All()
	if len(found) != 1 {
		t.Fatalf("logs: %v, want one warning about the descriptor limit", logs.All())
	}
	if f := found[0].ContextMap(); f["need"] != uint64(1<<40) || f["limit"] == nil {
		t.Errorf("warning fields %v", f)
	}
	if n := fdNeed(testConfig(), 2, 16384); n != uint64(2*16384+(65535-49152+1)+fdReserve) {
		t.Errorf("fdNeed = %d", n)
	}
}
