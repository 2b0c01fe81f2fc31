package doctor

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/config"
)

// checkListeners binds each configured port, or finds traverse holding it.
func checkListeners(r *Report, cfg config.Config, opts Options) {
	type listener struct{ kind, network, addr string }
	var ls []listener
	if cfg.Relay.Enabled {
		for _, a := range cfg.Listen.UDP {
			ls = append(ls, listener{"udp", "udp", a})
		}
		for _, a := range cfg.Listen.TCP {
			ls = append(ls, listener{"tcp", "tcp", a})
		}
		if cfg.TLS.Enabled() {
			for _, a := range cfg.Listen.TLS {
				ls = append(ls, listener{"tls", "tcp", a})
			}
		}
	}
	if cfg.Issuer.Enabled {
		ls = append(ls, listener{"issuer", "tcp", cfg.Issuer.Listen})
	}
	if cfg.Metrics.Listen != "" {
		ls = append(ls, listener{"metrics", "tcp", cfg.Metrics.Listen})
	}
	for _, l := range ls {
		name := "port " + l.kind + " " + l.addr
		err := tryBind(l.network, l.addr)
		switch {
		case err == nil:
			r.add(name, OK, "free: traverse can bind it")
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EADDRINUSE):
			// The kernel refuses an unprivileged bind below 1024 before it
			// looks whether the port is taken: ask the holder either way.
			switch who := heldByTraverse(l.kind, l.addr, opts.Timeout); {
			case who != "":
				r.add(name, OK, "held by traverse (%s)", who)
			case errors.Is(err, syscall.EACCES):
				r.add(name, Fail, "permission denied: ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)")
			default:
				r.add(name, Fail, "in use by another process")
			}
		default:
			r.add(name, Fail, "%v", err)
		}
	}
}

func tryBind(network, addr string) error {
	if network == "udp" {
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			_ = pc.Close()
		}
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		_ = ln.Close()
	}
	return err
}

// dialable turns a listen address into one to connect to: an unspecified
// host means this machine.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// heldByTraverse says how the port's holder showed itself to be traverse,
// or "" when it did not.
func heldByTraverse(kind, addr string, timeout time.Duration) string {
	target := dialable(addr)
	switch kind {
	case "udp", "tcp", "tls":
		nw := "udp"
		if kind != "udp" {
			nw = "tcp"
		}
		if stunAnswers(nw, target, timeout) {
			return "answers STUN Binding"
		}
	case "metrics":
		if body, err := httpGet("http://"+target+"/healthz", timeout); err == nil && strings.TrimSpace(body) == "ok" {
			return "answers /healthz"
		}
	case "issuer":
		for _, scheme := range []string{"https", "http"} {
			if _, err := httpGet(scheme+"://"+target+"/", timeout); err == nil {
				return "answers " + strings.ToUpper(scheme)
			}
		}
	}
	return ""
}

// stunAnswers sends one Binding request (plain, on TCP too: TLS ports also
// take plain TURN) and waits for a success answer.
func stunAnswers(network, target string, timeout time.Duration) bool {
	c, err := net.DialTimeout(network, target, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(req.Raw); err != nil {
		return false
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return false
	}
	res := &stun.Message{Raw: buf[:n]}
	return res.Decode() == nil && res.Type == stun.BindingSuccess && res.TransactionID == req.TransactionID
}

func httpGet(url string, timeout time.Duration) (string, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		// Only whether something speaks HTTP(S) matters here.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // identification, not trust
	}}
	res, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	return string(b), nil
}

// checkCertificate reports the time left on the certificate traverse serves
// and whether its names cover issuer.public_host.
func checkCertificate(r *Report, cfg config.Config, opts Options) {
	const name = "certificate"
	if !cfg.TLS.Enabled() {
		r.add(name, Warn, "none configured: turns: and HTTPS are off (set tls.acme or tls.cert/key)")
		return
	}
	file := cfg.TLS.Cert
	if cfg.TLS.ACME.Enabled() {
		file = acmeCertFile(cfg)
		if file == "" {
			r.add(name, Warn, "ACME has not stored a certificate for %s yet: start traverse and watch /readyz", cfg.TLS.ACME.Domains[0])
			return
		}
	}
	leaf, err := readLeaf(file)
	if err != nil {
		r.add(name, Fail, "%s: %v", file, err)
		return
	}
	left := leaf.NotAfter.Sub(opts.Now())
	switch {
	case left <= 0:
		r.add(name, Fail, "%s expired %s ago (%s)", file, (-left).Round(time.Minute), leaf.NotAfter.Format(time.RFC3339))
	case left < 7*24*time.Hour && !cfg.TLS.ACME.Enabled():
		r.add(name, Warn, "%s expires in %s: renew it", file, left.Round(time.Minute))
	default:
		r.add(name, OK, "%s valid for %s more (until %s)", file, days(left), leaf.NotAfter.Format(time.RFC3339))
	}
	host := cfg.Issuer.PublicHost
	if host == "" && cfg.TLS.ACME.Enabled() {
		host = cfg.TLS.ACME.Domains[0]
	}
	switch {
	case host == "":
		r.add("certificate names", Warn, "issuer.public_host is not set: turns: URIs carry the relay IP, which the certificate %v does not name", leaf.DNSNames)
	case leaf.VerifyHostname(host) != nil:
		r.add("certificate names", Fail, "%v do not cover issuer.public_host %s: clients will refuse turns:", leaf.DNSNames, host)
	default:
		r.add("certificate names", OK, "cover %s", host)
	}
}

func days(d time.Duration) string {
	if d >= 48*time.Hour {
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	}
	return d.Round(time.Minute).String()
}

// acmeCertFile finds certmagic's stored certificate for the first domain
// (certificates/<issuer>/<domain>/<domain>.crt under the storage).
func acmeCertFile(cfg config.Config) string {
	storage := cfg.TLS.ACME.Storage
	if storage == "" {
		storage = filepath.Join(cfg.DataDir, "acme")
	}
	d := strings.ToLower(cfg.TLS.ACME.Domains[0])
	matches, _ := filepath.Glob(filepath.Join(storage, "certificates", "*", d, d+".crt"))
	if len(matches) == 0 {
		return ""
	}
	return matches[0]
}

func readLeaf(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// checkPeers lists what the peer policy opens beyond public addresses.
func checkPeers(r *Report, cfg config.Config) {
	p := cfg.Relay.Peers
	var open []string
	if p.AllowLoopback {
		open = append(open, "loopback (127.0.0.0/8, ::1)")
	}
	open = append(open, p.Allow...)
	switch {
	case len(open) == 0:
		r.add("peers", OK, "public addresses only; private, loopback, link-local and multicast ranges denied%s", denyNote(p))
	case p.AllowLoopback:
		r.add("peers", Warn, "open beyond public addresses: %s%s; loopback peers reach this host's own services", strings.Join(open, ", "), denyNote(p))
	default:
		r.add("peers", OK, "open beyond public addresses: %s%s", strings.Join(open, ", "), denyNote(p))
	}
}

func denyNote(p config.Peers) string {
	if len(p.Deny) == 0 {
		return ""
	}
	return "; also denied: " + strings.Join(p.Deny, ", ")
}

// checkPortRange warns when the relay range overlaps the kernel's
// ephemeral range: outgoing connections could then hold relay ports.
func checkPortRange(r *Report, cfg config.Config, opts Options) {
	const name = "relay port range"
	if !cfg.Relay.Enabled {
		return
	}
	data, err := os.ReadFile(opts.LocalPortRange)
	if err != nil {
		r.add(name, Warn, "cannot read %s: %v", opts.LocalPortRange, err)
		return
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		r.add(name, Warn, "cannot parse %s: %q", opts.LocalPortRange, data)
		return
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		r.add(name, Warn, "cannot parse %s: %q", opts.LocalPortRange, data)
		return
	}
	pr := cfg.Relay.Ports
	if pr.Min <= hi && lo <= pr.Max {
		r.add(name, Warn, "relay.ports %d-%d overlaps net.ipv4.ip_local_port_range %d-%d: outgoing connections may take relay ports; "+
			"move one (e.g. sysctl net.ipv4.ip_local_port_range=\"32768 49151\")", pr.Min, pr.Max, lo, hi)
		return
	}
	r.add(name, OK, "relay.ports %d-%d is clear of net.ipv4.ip_local_port_range %d-%d", pr.Min, pr.Max, lo, hi)
}

// checkFDLimit compares the descriptor limit with relay.quota.total: every
// allocation holds a relay socket, and a TCP or TLS client a connection too.
func checkFDLimit(r *Report, cfg config.Config) {
	const name = "file descriptors"
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		r.add(name, Warn, "getrlimit: %v", err)
		return
	}
	total := cfg.Relay.Quota.Total
	const spare = 1024 // listeners, the store, the issuer's clients
	note := " (this shell's limit; the systemd unit sets LimitNOFILE)"
	switch {
	case !cfg.Relay.Enabled:
		r.add(name, OK, "limit %d; the relay is off", lim.Cur)
	case total == 0:
		r.add(name, Warn, "relay.quota.total is unlimited: the limit %d caps allocations near %d; set a quota%s",
			lim.Cur, max(int64(lim.Cur)-spare, 0)/2, note)
	case lim.Cur < uint64(2*total+spare):
		r.add(name, Warn, "limit %d is below %d needed for relay.quota.total %d (2 per allocation + %d)%s",
			lim.Cur, 2*total+spare, total, spare, note)
	default:
		r.add(name, OK, "limit %d covers relay.quota.total %d", lim.Cur, total)
	}
}
