package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/sys/unix"
)

// proc is a process the bench started; only these are ever signalled.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the process (by its PID) and kills it after 5s.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func start(name string, cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st, nil
}

const tickSeconds = 0.01

// rssKB is VmRSS of pid.
func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strconv.ParseInt(strings.Fields(line)[1], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// freePort finds a port free for both UDP and TCP on 127.0.0.1.
func freePort() (int, error) {
	for i := 0; i < 20; i++ {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		_ = u.Close()
		if err == nil {
			_ = t.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port")
}

// waitSTUN polls addr with Binding requests until it answers.
func waitSTUN(addr netip.AddrPort, p *proc, limit time.Duration) error {
	return waitUDP(addr, p, limit, "answer STUN", func() []byte {
		return stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	}, stun.IsMessage)
}

// waitEcho polls a UDP echo peer until it answers.
func waitEcho(addr netip.AddrPort, p *proc, limit time.Duration) error {
	return waitUDP(addr, p, limit, "echo", func() []byte { return []byte("ping") },
		func([]byte) bool { return true })
}

// waitUDP sends probe() to addr every 200 ms until an answer passes ok, p
// exits, or limit passes.
func waitUDP(addr netip.AddrPort, p *proc, limit time.Duration, what string, probe func() []byte, ok func([]byte) bool) error {
	c, err := dialUDP(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited", p.name)
		default:
		}
		_, _ = c.Write(probe())
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && ok(buf[:n]) {
			return nil
		}
	}
	return fmt.Errorf("%s did not %s on %s within %s", p.name, what, addr, limit)
}

// traverseServer is a running `traverse serve`.
type traverseServer struct {
	*proc
	udp        netip.AddrPort // also the plain TCP listener (the shipped layout)
	tls        netip.AddrPort // TLS (and plain TCP) listener; zero without a certificate
	issuer     string         // http://host:port; empty without the issuer
	accountSid string
	authToken  string
}

// travSetup is what a `traverse serve` of the bench runs: a relay laid out
// as shipped (UDP and TCP on one port, TLS on another) and/or an issuer.
type travSetup struct {
	relay, issuer bool
	ports         [2]int // relay range
	cert, key     string // TLS listener's certificate; none: no TLS
	dsn           string // store; default SQLite in the data dir
	// profile, when set, is the file this `traverse serve` writes its CPU
	// profile to when it stops (TRAVERSE_CPU_PROFILE, for this process only).
	profile string
}

func (t travSetup) config(dir string, o opts) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\n", dir)
	if t.relay {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		tls := "[]"
		if t.cert != "" {
			tls = `["127.0.0.1:0"]`
		}
		fmt.Fprintf(&b, `listen:
  udp: ["127.0.0.1:%d"]
  tcp: ["127.0.0.1:%d"]
  tls: %s
relay:
  public_ip: 127.0.0.1
  bind_ip: 127.0.0.1
  ports: {min: %d, max: %d}
  peers:
    allow_loopback: true
  quota: {per_user: 0, total: 0}
  udp_sockets: %d
  drain_timeout: 1s
`, port, port, tls, t.ports[0], t.ports[1], o.threads)
	} else {
		b.WriteString("listen: {udp: [], tcp: [], tls: []}\nrelay:\n  enabled: false\n")
	}
	if t.cert != "" {
		fmt.Fprintf(&b, "tls: {cert: %s, key: %s}\n", t.cert, t.key)
	}
	fmt.Fprintf(&b, "auth:\n  secrets: [%s]\n", o.secret)
	if t.issuer {
		b.WriteString("issuer:\n  listen: 127.0.0.1:0\n  public_host: 127.0.0.1\n")
	} else {
		b.WriteString("issuer:\n  enabled: false\nconsole:\n  enabled: false\n")
	}
	if t.dsn != "" {
		fmt.Fprintf(&b, "store:\n  dsn: %s\n", t.dsn)
	}
	b.WriteString("metrics:\n  listen: 127.0.0.1:0\nlog:\n  format: json\n  level: info\n")
	return b.String(), nil
}

func startTraverse(ctx context.Context, bin, dir string, o opts, setup travSetup) (*traverseServer, error) {
	cfg, err := setup.config(dir, o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "traverse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, bin, "accounts", "create", "--friendly-name", "bench", "--json", "-c", path).Output()
	if err != nil {
		return nil, fmt.Errorf("traverse accounts create: %w", err)
	}
	var acct struct {
		Sid       string `json:"sid"`
		AuthToken string `json:"auth_token"`
	}
	if err := json.Unmarshal(out, &acct); err != nil {
		return nil, fmt.Errorf("accounts create printed %q: %w", out, err)
	}

	cmd := exec.Command(bin, "serve", "-c", path)
	cmd.Env = profileEnv(os.Environ(), setup.profile)
	logf, err := os.Create(filepath.Join(dir, "traverse.log"))
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logf
	p, err := start("traverse", cmd)
	if err != nil {
		return nil, err
	}
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, logf))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "traverse started" {
				started <- line
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	s := &traverseServer{proc: p, accountSid: acct.Sid, authToken: acct.AuthToken}
	first := func(line map[string]any, key string) (netip.AddrPort, error) {
		l, _ := line[key].([]any)
		if len(l) == 0 {
			return netip.AddrPort{}, fmt.Errorf("traverse start-up line has no %s listener: %v", key, line)
		}
		return netip.ParseAddrPort(fmt.Sprint(l[0]))
	}
	select {
	case line := <-started:
		if setup.relay {
			if s.udp, err = first(line, "udp"); err == nil && setup.cert != "" {
				s.tls, err = first(line, "tls")
			}
			if err != nil {
				p.stop()
				return nil, err
			}
		}
		if setup.issuer {
			s.issuer = "http://" + fmt.Sprint(line["issuer"])
		}
	case <-p.done:
		b, _ := os.ReadFile(filepath.Join(dir, "traverse.log"))
		return nil, fmt.Errorf("traverse serve exited:\n%s", b)
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, errors.New("traverse serve did not start in 30s")
	}
	if !setup.relay {
		return s, nil
	}
	return s, waitSTUN(s.udp, p, 10*time.Second)
}

// profileEnv is env with TRAVERSE_CPU_PROFILE set to path, or removed when
// path is "": a profile asked of the bench's own environment would have
// every server overwrite the same file.
func profileEnv(env []string, path string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TRAVERSE_CPU_PROFILE=") {
			out = append(out, kv)
		}
	}
	if path != "" {
		out = append(out, "TRAVERSE_CPU_PROFILE="+path)
	}
	return out
}

// coturnServer is a running turnserver.
type coturnServer struct {
	*proc
	udp netip.AddrPort // also TCP, as coturn always listens
	tls netip.AddrPort
}

// startCoturn runs Debian's turnserver with the settings traverse gets: UDP
// and TCP on one port, TLS on another with the bench's certificate.
func startCoturn(dir string, o opts, ports [2]int, cert, key string) (*coturnServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cmd := exec.Command("turnserver", "-n",
		"--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
		"--listening-port", strconv.Itoa(port),
		"--use-auth-secret", "--static-auth-secret="+o.secret, "--realm", "traverse",
		"--allow-loopback-peers",
		"--tls-listening-port", strconv.Itoa(tlsPort), "--cert", cert, "--pkey", key,
		"--min-port", strconv.Itoa(ports[0]), "--max-port", strconv.Itoa(ports[1]),
		"--relay-threads", strconv.Itoa(o.threads),
		"--no-dtls", "--no-cli",
		"--simple-log", "--log-file", filepath.Join(dir, "coturn.log"),
		"--pidfile", filepath.Join(dir, "coturn.pid"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := start("coturn", cmd)
	if err != nil {
		return nil, err
	}
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	s := &coturnServer{proc: p, udp: netip.AddrPortFrom(lo, uint16(port)), tls: netip.AddrPortFrom(lo, uint16(tlsPort))}
	if err := waitSTUN(s.udp, p, 10*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w\n%s", err, out.String())
	}
	return s, nil
}

// startPeer runs coturn's turnutils_peer, a UDP echo server in C, for
// coturn's own load generator (the turnutils_uclient rows), as issue 6 did.
func startPeer() (*proc, netip.AddrPort, error) {
	port, err := freePort()
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	cmd := exec.Command("turnutils_peer", "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	p, err := start("turnutils_peer", cmd)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
	if err := waitEcho(addr, p, 10*time.Second); err != nil {
		p.stop()
		return nil, addr, err
	}
	return p, addr, nil
}

// startSelf runs this program in one of its helper modes (forward, echo) as
// its own process, so that its CPU is measured apart from the generator's,
// and reads the address it prints.
func startSelf(name string, args ...string) (*proc, netip.AddrPort, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	cmd := exec.Command(self, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	cmd.Stderr = os.Stderr
	p, err := start(name, cmd)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		p.stop()
		return nil, netip.AddrPort{}, fmt.Errorf("%s: %w", name, err)
	}
	addr, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		p.stop()
		return nil, addr, err
	}
	return p, addr, waitEcho(addr, p, 10*time.Second)
}

// echo is the UDP echo peer of the generator-driven runs: one goroutine on
// one thread, like turnutils_peer, but it reads up to 64 datagrams with one
// recvmmsg and answers them with one sendmmsg. turnutils_peer spends two
// system calls per echo; at saturation it took close to a core of the two
// this machine has, and that cost, paid alike whichever server is measured,
// pulled every messages/s ratio towards 1.
func echo() error {
	runtime.GOMAXPROCS(1)
	l, err := listenAnnounced()
	if err != nil {
		return err
	}
	return echoOn(l)
}

// listenAnnounced opens a helper mode's loopback UDP socket, with room for
// bursts, and prints its address for startSelf.
func listenAnnounced() (*net.UDPConn, error) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = l.SetReadBuffer(4 << 20)
	_ = l.SetWriteBuffer(4 << 20)
	fmt.Println(l.LocalAddr().String())
	return l, nil
}

// echoOn echoes every datagram l receives until l is closed.
func echoOn(l *net.UDPConn) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = stampReceives(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	b := newMsgBatch(64, 2048).withRxTimes()
	var n int
	var e unix.Errno
	read := func(fd uintptr) bool {
		n, e = b.recv(int(fd))
		return e != unix.EAGAIN // false: wait in the netpoller
	}
	for {
		if err := rc.Read(read); err != nil {
			return err
		}
		if e != 0 {
			continue // EINTR, or an ICMP error consumed
		}
		b.noteHold(n)
		_ = rc.Write(func(fd uintptr) bool { b.echo(int(fd), n); return true })
	}
}

// noteHold writes into each of datagrams [0, n) that asks for it (a media
// payload with holdMark) how long this peer has held it, so that the
// generator can leave the echo's own wake-up out of the relay's round trip.
func (b *msgBatch) noteHold(n int) {
	now := time.Now().UnixNano()
	for i := range n {
		p := b.bufs[i][:b.hdrs[i].n]
		if len(p) < payloadMin || [4]byte(p[payloadHoldMark:payloadHold]) != holdMark {
			continue
		}
		if rx := b.rxTime(i); rx != 0 {
			binary.BigEndian.PutUint64(p[payloadHold:], uint64(now-rx))
		}
	}
}

// startForwarder runs this program's `forward` mode.
func startForwarder(peer netip.AddrPort) (*proc, netip.AddrPort, error) {
	return startSelf("forwarder", "forward", peer.String())
}

// startEcho runs this program's `echo` mode.
func startEcho() (*proc, netip.AddrPort, error) { return startSelf("echo peer", "echo") }

// forward is the trivial Go UDP forwarder: one listener socket read by one
// goroutine; each client gets a connected upstream socket to the peer and a
// goroutine that copies the peer's answers back.
func forward(peer string) error {
	to, err := netip.ParseAddrPort(peer)
	if err != nil {
		return err
	}
	l, err := listenAnnounced()
	if err != nil {
		return err
	}
	up := map[netip.AddrPort]*net.UDPConn{}
	buf := make([]byte, 2048)
	for {
		n, from, err := l.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		c, ok := up[from]
		if !ok {
			if c, err = dialUDP(to); err != nil {
				return err
			}
			up[from] = c
			go func(c *net.UDPConn, client netip.AddrPort) {
				b := make([]byte, 2048)
				for {
					n, err := c.Read(b)
					if err != nil {
						return
					}
					_, _ = l.WriteToUDPAddrPort(b[:n], client)
				}
			}(c, from)
		}
		_, _ = c.Write(buf[:n])
	}
}
