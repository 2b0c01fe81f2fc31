package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/traverse/traverse/internal/testnet"
)

// The interop matrix (issue 16) relays N messages to a peer and back through
// the built binary, laid out as it ships (UDP and TCP on one port, TLS and
// plain TCP on another), for every client written by others × transport ×
// peer × data mode × burst, and counts every echo. Over loopback at these
// rates any loss is a failure. A cell that cannot apply says why.

// matrixTransport is one way to reach the relay.
type matrixTransport struct {
	name string // udp, tcp, tls, tcp-on-tls-port, with "6" for IPv6
	dial string // what the client speaks: udp, tcp or tls
	addr string // listener address
	v6   bool
}

func matrixTransports(in *Instance) []matrixTransport {
	out := []matrixTransport{
		{"udp", "udp", in.UDPs[0], false},
		{"tcp", "tcp", in.TCPs[0], false},
		{"tls", "tls", in.TLSs[0], false},
		{"tcp-on-tls-port", "tcp", in.TLSs[0], false},
	}
	if len(in.UDPs) > 1 {
		out = append(out,
			matrixTransport{"udp6", "udp", in.UDPs[1], true},
			matrixTransport{"tcp6", "tcp", in.TCPs[1], true},
			matrixTransport{"tls6", "tls", in.TLSs[1], true},
		)
	}
	return out
}

// Peers: a UDP socket on loopback that is not on the relay, and another
// allocation on the same relay (relay to relay, as two browsers both forced
// to relay meet).
const (
	peerExternal   = "external-udp"
	peerSameServer = "same-server-allocation"
)

// Data modes.
const (
	modeFirstContact = "send-indication-first" // the client sends before any channel exists
	modeChannel      = "channel-data"          // after the client bound a channel
	modePeerFirst    = "peer-speaks-first"     // the peer sends as soon as the permission exists
)

// bursts: one message, 300 paced 1 ms apart, 300 back to back.
type burst struct {
	name string
	n    int
	gap  time.Duration
}

var bursts = []burst{{"1", 1, 0}, {"300-paced", 300, time.Millisecond}, {"300-back-to-back", 300, 0}}

const msgSize = 100

// cell is one line of the matrix.
type cell struct {
	client, transport, peer, mode, burst string
	sent, echoed                         int
	na                                   string // why the cell cannot apply
	err                                  string
}

type matrix struct {
	mu    sync.Mutex
	cells []cell
}

func (m *matrix) add(c cell) {
	m.mu.Lock()
	m.cells = append(m.cells, c)
	m.mu.Unlock()
}

// table is the matrix as one text table, client × transport × peer →
// echoed/sent for each mode and burst.
func (m *matrix) table() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	type key struct{ client, transport, peer string }
	rows := map[key][]string{}
	var keys []key
	for _, c := range m.cells {
		k := key{c.client, c.transport, c.peer}
		if _, ok := rows[k]; !ok {
			keys = append(keys, k)
		}
		v := fmt.Sprintf("%d/%d", c.echoed, c.sent)
		switch {
		case c.na != "":
			v = "n/a: " + c.na
		case c.err != "":
			v += " ERROR " + c.err
		}
		if c.mode == "" { // the whole row cannot apply
			rows[k] = append(rows[k], v)
			continue
		}
		rows[k] = append(rows[k], fmt.Sprintf("%s/%s %s", c.mode, c.burst, v))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s %-16s %-24s echoed/sent by mode/burst\n", "client", "transport", "peer")
	for _, k := range keys {
		fmt.Fprintf(&b, "%-14s %-16s %-24s %s\n", k.client, k.transport, k.peer, strings.Join(rows[k], "; "))
	}
	return b.String()
}

// check fails the test for every cell that lost a message or failed.
func (m *matrix) check(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.cells {
		if c.na == "" && (c.err != "" || c.echoed != c.sent || c.sent == 0) {
			t.Errorf("%s %s %s %s %s: %d of %d echoed %s", c.client, c.transport, c.peer, c.mode, c.burst, c.echoed, c.sent, c.err)
		}
	}
}

// TestInteropMatrix runs the matrix and prints it; it writes the table to
// the artefacts too (interop-matrix.txt).
func TestInteropMatrix(t *testing.T) {
	// Every cell mints its own credentials from one account: some 250 in
	// 15-25 s, past issuer.tokens_per_second's default (a burst of 100,
	// then 10 a second) when the machine runs the matrix fast. The limiter
	// has tests of its own; here it would only fail a cell with a 429.
	in := Start(t, Options{TLS: true, IPv6: hasIPv6Loopback(), Issuer: "  tokens_per_second: 0\n"})
	m := &matrix{}
	defer func() {
		tbl := m.table()
		// What traverse itself dropped, by reason, to tell its losses from
		// the clients' and the kernel's.
		tbl += "traverse_relay_dropped_packets_total:"
		for _, r := range []string{"no_route", "send_error", "inbox_full", "stream_queue_full"} {
			tbl += fmt.Sprintf(" %s=%.0f", r, in.Metric(`traverse_relay_dropped_packets_total{reason="`+r+`"}`))
		}
		tbl += "\n"
		t.Logf("interop matrix:\n%s", tbl)
		if dir := os.Getenv("TRAVERSE_ARTIFACTS"); dir != "" {
			_ = os.WriteFile(filepath.Join(dir, "interop-matrix.txt"), []byte(tbl), 0o644)
		}
		m.check(t)
	}()
	t.Run("pion-turn", func(t *testing.T) { pionTURNCells(t, in, m) })
	t.Run("coturn-uclient", func(t *testing.T) { uclientCells(t, in, m) })
	t.Run("pion-webrtc", func(t *testing.T) { webrtcCells(t, in, m) })
	t.Run("chromium", func(t *testing.T) { chromiumCells(t, in, m) })
}

// hasIPv6Loopback reports whether ::1 can be bound here.
func hasIPv6Loopback() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// counter counts datagrams of msgSize bytes read from pc until want arrive
// or nothing has come for idle; echo, if set, sends each back.
func counter(pc net.PacketConn, want int, idle time.Duration, echo bool) <-chan int {
	out := make(chan int, 1)
	go func() {
		buf := make([]byte, 1600)
		got := 0
		for got < want {
			_ = pc.SetReadDeadline(time.Now().Add(idle))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			if n != msgSize {
				continue
			}
			got++
			if echo {
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}
		out <- got
	}()
	return out
}

// send writes b.n messages to to, b.gap apart.
func send(pc net.PacketConn, to net.Addr, b burst) (int, error) {
	msg := make([]byte, msgSize)
	for i := 0; i < b.n; i++ {
		if _, err := pc.WriteTo(msg, to); err != nil {
			return i, err
		}
		if b.gap > 0 {
			time.Sleep(b.gap)
		}
	}
	return b.n, nil
}

// echoForever echoes what pc reads until it is closed.
func echoForever(pc net.PacketConn) {
	go func() {
		buf := make([]byte, 1600)
		for {
			_ = pc.SetReadDeadline(time.Time{})
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// pionTURNCells drives pion/turn's own client (issue 16's reproduction).
func pionTURNCells(t *testing.T, in *Instance, m *matrix) {
	for _, tr := range matrixTransports(in) {
		for _, peer := range []string{peerExternal, peerSameServer} {
			for _, mode := range []string{modeFirstContact, modeChannel, modePeerFirst} {
				for _, b := range bursts {
					c := cell{client: "pion-turn", transport: tr.name, peer: peer, mode: mode, burst: b.name}
					if tr.name == "udp6" {
						c.na = "pion's client resolves its server as udp4"
						m.add(c)
						continue
					}
					c.sent, c.echoed, c.err = pionCell(t, in, tr, peer, mode, b)
					m.add(c)
				}
			}
		}
	}
}

// pionCell runs one cell with a fresh allocation (and a fresh peer), so a
// first-contact cell really has no channel yet.
func pionCell(t *testing.T, in *Instance, tr matrixTransport, peerKind, mode string, b burst) (sent, echoed int, errText string) {
	tok := in.CreateToken(3600)
	client, rc, err := turnClient(t, tr.dial, tr.addr, tok.Username, tok.Password)
	if err != nil {
		return 0, 0, "allocate: " + err.Error()
	}
	defer rc.Close()

	// The peer: its socket, and whether it must permit the client first.
	var peer net.PacketConn
	var permitPeer func() error
	switch peerKind {
	case peerExternal:
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		testnet.LargeBuffers(pc.(*net.UDPConn))
		peer = pc
		permitPeer = func() error { return nil }
	case peerSameServer:
		ptok := in.CreateToken(3600)
		pclient, prc, err := turnClient(t, "udp", in.UDPs[0], ptok.Username, ptok.Password)
		if err != nil {
			return 0, 0, "peer allocate: " + err.Error()
		}
		defer prc.Close()
		peer = prc
		permitPeer = func() error { return pclient.CreatePermission(rc.LocalAddr()) }
	}
	if err := permitPeer(); err != nil {
		return 0, 0, "peer permission: " + err.Error()
	}
	idle := 5 * time.Second

	switch mode {
	case modeFirstContact, modeChannel:
		echoForever(peer)
		if mode == modeChannel {
			// One round trip makes pion's client bind a channel; wait
			// until the relay has it.
			before := in.Metric("traverse_relay_channels_active")
			got := counter(rc, 1, idle, false)
			if _, err := send(rc, peer.LocalAddr(), burst{n: 1}); err != nil {
				return 0, 0, err.Error()
			}
			if <-got != 1 {
				return 1, 0, "warm-up message lost"
			}
			deadline := time.Now().Add(5 * time.Second)
			for in.Metric("traverse_relay_channels_active") <= before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		got := counter(rc, b.n, idle, false)
		n, err := send(rc, peer.LocalAddr(), b)
		if err != nil {
			return n, <-got, err.Error()
		}
		return n, <-got, ""
	case modePeerFirst:
		if err := client.CreatePermission(peer.LocalAddr()); err != nil {
			return 0, 0, "permission: " + err.Error()
		}
		echoed := counter(rc, b.n, idle, true) // the client echoes
		got := counter(peer, b.n, idle, false)
		n, err := send(peer, rc.LocalAddr(), b)
		<-echoed
		if err != nil {
			return n, <-got, err.Error()
		}
		return n, <-got, ""
	}
	return 0, 0, "unknown mode"
}
