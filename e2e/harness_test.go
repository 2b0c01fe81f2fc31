// Package e2e runs the built traverse binary as an operator would — a config
// file, loopback addresses — and drives it with clients written by others.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/traverse/traverse/internal/testbin"
	"github.com/traverse/traverse/internal/testnet"
)

// binary is the traverse built once for the package's tests.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// Secret is the TURN REST secret every e2e config uses.
const Secret = "e2e-secret-0123456789abcdef"

// Instance is a running `traverse serve`.
type Instance struct {
	t      *testing.T
	Dir    string // data_dir, config, certificates
	Config string // config file path
	cmd    *exec.Cmd
	logs   *syncBuffer
	UDP    string // bound listener addresses (the first of each kind)
	TCP    string
	TLS    string
	// Every bound listener address of each kind, IPv6 ones included.
	UDPs, TCPs, TLSs []string
	Issuer           string // http(s)://host:port
	Metrics          string // http://host:port
	// Account is the primary account created before start.
	AccountSid, AuthToken string
	exited                chan struct{}
}

// Options adjust the config an Instance starts with; Extra is appended YAML.
type Options struct {
	TLS   bool   // generate a certificate and serve TLS listeners and HTTPS
	Extra string // more YAML, e.g. "auth:\n  strict_expiry: true\n"
	// DenyLoopback leaves relay.peers.allow_loopback false, so loopback
	// peers (every peer in these tests) are refused by the built-in policy.
	DenyLoopback bool
	// Drain is relay.drain_timeout; default 1s.
	Drain time.Duration
	// CORSOrigins is issuer.cors_origins: origins whose pages may call
	// POST /v1/ice-servers.
	CORSOrigins []string
	// IP is the loopback address of the TURN listeners and the relay
	// (relay.bind_ip and relay.public_ip); default 127.0.0.1.
	IP string
	// Fleet leaves issuer.public_host unset, so the issuer lists the relays
	// its fleet view chooses.
	Fleet bool
	// Issuer is more YAML inside the issuer section, each line indented by
	// two spaces, e.g. "  relays_per_token: 2\n".
	Issuer string
	// IPv6 adds listeners on [::1] beside 127.0.0.1 (UDP and TCP sharing a
	// port there too).
	IPv6 bool
}

// sharedPort returns a loopback port free for both UDP and TCP, so that an
// instance is laid out as traverse ships: UDP and TCP on one port (3478),
// TLS and plain TCP on another. A test harness that gave each its own port
// hid that peers' data for TCP clients went out as UDP (issue 16).
func sharedPort(t *testing.T, host string) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		_ = u.Close()
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatalf("no port on %s free for both UDP and TCP", host)
	return 0
}

// listenYAML is the listen section on ip (and ::1 with ipv6): UDP and TCP
// sharing a port on each address, TLS (and plain TCP) on another.
func listenYAML(t *testing.T, ip string, ipv6 bool) string {
	hosts := []string{ip}
	if ipv6 {
		hosts = append(hosts, "::1")
	}
	var shared, tls []string
	for _, h := range hosts {
		shared = append(shared, fmt.Sprintf("%q", net.JoinHostPort(h, fmt.Sprint(sharedPort(t, h)))))
		tls = append(tls, fmt.Sprintf("%q", net.JoinHostPort(h, "0")))
	}
	return fmt.Sprintf("listen:\n  udp: [%[1]s]\n  tcp: [%[1]s]\n  tls: [%[2]s]\n",
		strings.Join(shared, ", "), strings.Join(tls, ", "))
}

// Start writes a loopback config, creates an account with the CLI, starts
// `traverse serve` and waits for its start-up line.
func Start(t *testing.T, o Options) *Instance {
	t.Helper()
	dir := t.TempDir()
	drain := o.Drain
	if drain == 0 {
		drain = time.Second
	}
	in := &Instance{t: t, Dir: dir, Config: filepath.Join(dir, "traverse.yaml"), logs: &syncBuffer{}, exited: make(chan struct{})}
	ip := o.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	issuerExtra := "  public_host: " + ip + "\n"
	if o.Fleet {
		// The fleet tests measure the spread over hundreds of tokens a
		// second from one account, past issuer.tokens_per_second.
		issuerExtra = "  tokens_per_second: 0\n"
	}
	issuerExtra += o.Issuer
	cfg := fmt.Sprintf(`data_dir: %s
%[7]srelay:
  public_ip: %[5]s
  bind_ip: %[5]s
  peers:
    allow_loopback: %[2]t
  drain_timeout: %[3]s
issuer:
  listen: 127.0.0.1:0
  cors_origins: [%[4]s]
%[6]smetrics:
  listen: 127.0.0.1:0
log:
  format: json
  level: debug
`, dir, !o.DenyLoopback, drain, strings.Join(o.CORSOrigins, ", "), ip, issuerExtra, listenYAML(t, ip, o.IPv6))
	if o.TLS {
		cert, key := WriteCert(t, dir)
		cfg += fmt.Sprintf("tls:\n  cert: %s\n  key: %s\n", cert, key)
	}
	if !strings.Contains(o.Extra, "auth:") {
		cfg += "auth:\n  secrets: [" + Secret + "]\n"
	}
	cfg += o.Extra
	if err := os.WriteFile(in.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	var acct struct {
		Sid       string `json:"sid"`
		AuthToken string `json:"auth_token"`
	}
	out := in.CLI("accounts", "create", "--friendly-name", "e2e", "--json")
	if err := json.Unmarshal(out, &acct); err != nil || acct.Sid == "" {
		t.Fatalf("accounts create printed %q: %v", out, err)
	}
	in.AccountSid, in.AuthToken = acct.Sid, acct.AuthToken

	in.cmd = exec.Command(binary, "serve", "-c", in.Config)
	stderr, err := in.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	in.cmd.Stdout = in.logs
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan map[string]any, 1)
	go func() {
		defer close(in.exited)
		sc := bufio.NewScanner(io.TeeReader(stderr, in.logs))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "traverse started" {
				started <- line
			}
		}
		_ = in.cmd.Wait()
	}()
	t.Cleanup(in.Stop)
	select {
	case line := <-started:
		first := func(k string) string {
			if v, ok := line[k].([]any); ok && len(v) > 0 {
				return fmt.Sprint(v[0])
			}
			return ""
		}
		all := func(k string) []string {
			var out []string
			if v, ok := line[k].([]any); ok {
				for _, a := range v {
					out = append(out, fmt.Sprint(a))
				}
			}
			return out
		}
		in.UDP, in.TCP, in.TLS = first("udp"), first("tcp"), first("tls")
		in.UDPs, in.TCPs, in.TLSs = all("udp"), all("tcp"), all("tls")
		scheme := "http"
		if o.TLS {
			scheme = "https"
		}
		in.Issuer = scheme + "://" + fmt.Sprint(line["issuer"])
		in.Metrics = "http://" + fmt.Sprint(line["metrics"])
	case <-in.exited:
		t.Fatalf("traverse serve exited before starting:\n%s", in.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("traverse serve did not start in 20s:\n%s", in.logs.String())
	}
	return in
}

// CLI runs a traverse subcommand against the instance's config and returns stdout.
func (in *Instance) CLI(args ...string) []byte {
	in.t.Helper()
	cmd := exec.Command(binary, append(args, "-c", in.Config)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		in.t.Fatalf("traverse %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// Stop sends SIGTERM and waits for the process to exit.
func (in *Instance) Stop() {
	if in.cmd == nil || in.cmd.Process == nil {
		return
	}
	select {
	case <-in.exited:
		return
	default:
	}
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(15 * time.Second):
		_ = in.cmd.Process.Kill()
		<-in.exited
		in.t.Errorf("traverse did not stop within 15s of SIGTERM")
	}
	if in.t.Failed() {
		in.t.Logf("traverse logs:\n%s", in.logs.String())
	}
}

// Logs returns everything the process has written so far.
func (in *Instance) Logs() string { return in.logs.String() }

// Metric reads one sample from /metrics: name{labels} as it appears there,
// e.g. `traverse_relay_auth_total{result="expired"}`.
func (in *Instance) Metric(series string) float64 {
	in.t.Helper()
	res, err := http.Get(in.Metrics + "/metrics")
	if err != nil {
		in.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	in.t.Fatalf("series %s not in /metrics", series)
	return 0
}

// Token is the Tokens resource's answer.
type Token struct {
	AccountSid  string      `json:"account_sid"`
	Username    string      `json:"username"`
	Password    string      `json:"password"`
	TTL         string      `json:"ttl"`
	ICEServers  []ICEServer `json:"ice_servers"`
	DateCreated string      `json:"date_created"`
}

// ICEServer is one entry of ice_servers.
type ICEServer struct {
	URL        string `json:"url"`
	URLs       string `json:"urls"`
	Username   string `json:"username,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// CreateToken POSTs to the Tokens resource with the account's auth token.
func (in *Instance) CreateToken(ttl int) Token {
	in.t.Helper()
	form := url.Values{}
	if ttl > 0 {
		form.Set("Ttl", fmt.Sprint(ttl))
	}
	req, _ := http.NewRequest(http.MethodPost,
		in.Issuer+"/2010-04-01/Accounts/"+in.AccountSid+"/Tokens.json", strings.NewReader(form.Encode()))
	req.SetBasicAuth(in.AccountSid, in.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := HTTPClient().Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		in.t.Fatalf("Tokens: %d %s", res.StatusCode, body)
	}
	var tok Token
	if err := json.Unmarshal(body, &tok); err != nil {
		in.t.Fatal(err)
	}
	return tok
}

// syncBuffer is a bytes.Buffer safe for the log reader and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreeUDPPeer starts a UDP echo peer on loopback.
func FreeUDPPeer(t *testing.T) net.PacketConn {
	return testnet.EchoPeer(t, "udp4", "127.0.0.1:0")
}
