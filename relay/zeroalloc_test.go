//go:build !race

// The race detector allocates on its own account, so this guard runs
// without it (scripts/test runs it in a step of its own).

package relay

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/internal/testnet"
	"github.com/traverse/traverse/internal/turntest"
)

// TestRelayedPacketsAllocateNothing: a relayed round trip — client to peer
// and back, over a channel or as Send and Data indications, and a video
// frame's burst over a channel (whose runs to one destination leave as
// segmented sends, UDP GSO) — allocates nothing anywhere in the process.
// The client and the echo peer (testnet.EchoPeer) reuse their buffers, so
// every allocation counted would be the relay's.
func TestRelayedPacketsAllocateNothing(t *testing.T) {
	cfg := testConfig()
	cfg.Listen.TCP, cfg.Listen.TLS = nil, nil
	cfg.Relay.UDPSockets = 1
	r := startRelay(t, cfg, false)

	pc := testnet.EchoPeer(t, "udp4", "127.0.0.1:0")
	peer := pc.LocalAddr().(*net.UDPAddr).AddrPort()

	cred := mint(t, testSecret, "zero", time.Hour)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	const channel = 0x4001
	if err := c.BindChannel(channel, peer); err != nil {
		t.Fatal(err)
	}
	conn := c.Conn.(*net.UDPConn)
	server := r.Addrs().UDP[0].(*net.UDPAddr).AddrPort()

	chanData := make([]byte, 4+100)
	binary.BigEndian.PutUint16(chanData[0:], channel)
	binary.BigEndian.PutUint16(chanData[2:], 100)
	send, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		turntest.PeerAddress(peer), stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, 100)})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 4+1100)
	binary.BigEndian.PutUint16(frame[0:], channel)
	binary.BigEndian.PutUint16(frame[2:], 1100)
	buf := make([]byte, 2048)
	for _, tc := range []struct {
		name string
		pkt  []byte
		n    int // sent back to back, then all echoes read
	}{{"ChannelData", chanData, 1}, {"Send indication", send.Raw, 1}, {"ChannelData burst", frame, 8}} {
		roundTrip := func() {
			for range tc.n {
				if _, err := conn.WriteToUDPAddrPort(tc.pkt, server); err != nil {
					t.Fatal(err)
				}
			}
			for range tc.n {
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := conn.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatalf("%s: no echo: %v", tc.name, err)
				}
			}
		}
		for range 50 { // warm the caches and pools
			roundTrip()
		}
		if allocs := testing.AllocsPerRun(500, roundTrip); allocs > 0.2 {
			t.Errorf("%s: %.2f allocations per relayed round trip, want 0", tc.name, allocs)
		}
	}
}

// TestStreamPacketsAllocateNothing: the same over TCP and TLS. The client's
// ChannelData is relayed by the connection's reader without pion (streamin.go)
// and the echo comes back through the send queue (streamout.go): neither
// allocates. Over TLS the only allocations are crypto/tls's own: it makes a
// small reader per record it reads (Conn.readFromUntil), once in the
// client and once in the relay per round trip.
func TestStreamPacketsAllocateNothing(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.UDPSockets = 1
	r := startRelay(t, cfg, true)
	pc := testnet.EchoPeer(t, "udp4", "127.0.0.1:0")
	peer := pc.LocalAddr().(*net.UDPAddr).AddrPort()

	for _, tc := range []struct {
		name   string
		server net.Addr
		allows float64 // crypto/tls's record reads
		dial   func() (net.Conn, error)
	}{
		{"tcp", r.Addrs().TCP[0], 0, func() (net.Conn, error) {
			return net.DialTimeout("tcp", r.Addrs().TCP[0].String(), 5*time.Second)
		}},
		{"tls", r.Addrs().TLS[0], 2, func() (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.Addrs().TLS[0].String(),
				&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test's own self-signed certificate
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cred := mint(t, testSecret, "zero-"+tc.name, time.Hour)
			// pion's framing for the control messages; the data below is
			// read straight off the connection, which has nothing buffered
			// once the ChannelBind answer is in.
			c := &rawClient{Conn: turn.NewSTUNConn(conn), Server: tc.server, Username: cred.Username,
				Password: cred.Password, Realm: "traverse"}
			if _, err := c.Allocate(); err != nil {
				t.Fatal(err)
			}
			const channel = 0x4001
			if err := c.BindChannel(channel, peer); err != nil {
				t.Fatal(err)
			}
			msg := make([]byte, 4+100)
			binary.BigEndian.PutUint16(msg[0:], channel)
			binary.BigEndian.PutUint16(msg[2:], 100)
			echo := make([]byte, len(msg))
			roundTrip := func() {
				if _, err := conn.Write(msg); err != nil {
					t.Fatal(err)
				}
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(conn, echo); err != nil {
					t.Fatalf("no echo: %v", err)
				}
				if echo[0] != msg[0] || echo[1] != msg[1] {
					t.Fatalf("echo on channel %x, want %x", echo[:2], msg[:2])
				}
			}
			for range 50 {
				roundTrip()
			}
			if allocs := testing.AllocsPerRun(500, roundTrip); allocs > tc.allows+0.2 {
				t.Errorf("%.2f allocations per relayed round trip, want %v", allocs, tc.allows)
			}
		})
	}
}
