package relay

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/traverse/traverse/config"
)

// sharedPortConfig is testConfig with UDP and TCP on one port, as traverse
// ships (3478/udp and 3478/tcp), and TLS plus plain TCP on another.
func sharedPortConfig(port int) config.Config {
	c := testConfig()
	c.Listen.UDP = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	c.Listen.TCP = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	return c
}

// startSharedPortRelay starts a relay laid out as it ships, with UDP and TCP
// on one port. The port is picked free for both; another process may take
// it in between, so a bind failure picks again.
func startSharedPortRelay(t *testing.T) *testRelay {
	t.Helper()
	for try := 0; try < 20; try++ {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		_ = u.Close()
		if err != nil {
			continue
		}
		_ = l.Close()
		r, err := tryStartRelay(t, sharedPortConfig(port), true)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Fatal("no port free for both UDP and TCP in 20 tries")
	return nil
}

// echoCount writes n messages of size bytes through rc to peer back to back
// and counts the echoes that come back within wait.
func echoCount(t *testing.T, rc net.PacketConn, peer net.Addr, n, size int, wait time.Duration) int {
	t.Helper()
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 1600)
		count := 0
		_ = rc.SetReadDeadline(time.Now().Add(wait))
		for count < n {
			m, _, err := rc.ReadFrom(buf)
			if err != nil {
				break
			}
			if m == size {
				count++
			}
		}
		got <- count
	}()
	msg := make([]byte, size)
	for i := 0; i < n; i++ {
		if _, err := rc.WriteTo(msg, peer); err != nil {
			t.Errorf("write %d: %v", i, err)
			break
		}
	}
	return <-got
}

// TestStreamClientSharedPort is the regression test for TURN over TCP and
// TLS losing what peers send back: pion/turn reports every allocation's
// transport as "UDP", and the data path trusted that label, so on the port
// UDP and TCP share it sent a TCP client's data as UDP datagrams to its
// source port (all lost), and on the TLS port it left it to pion through an
// inbox sized for one datagram (most of a burst lost). pion's own client
// relays to an external UDP echo peer, first by Send indication (before any
// channel), then by ChannelData once it has bound a channel: one message,
// then 300 back to back, each direction counted.
func TestStreamClientSharedPort(t *testing.T) {
	r := startSharedPortRelay(t)
	if r.Addrs().UDP[0].(*net.UDPAddr).Port != r.Addrs().TCP[0].(*net.TCPAddr).Port {
		t.Fatalf("UDP %s and TCP %s should share a port", r.Addrs().UDP[0], r.Addrs().TCP[0])
	}
	for _, tc := range []struct {
		name, transport string
		server          net.Addr
	}{
		{"tcp-shared-port", "tcp", r.Addrs().TCP[0]},
		{"tls", "tls", r.Addrs().TLS[0]},
		{"tcp-on-tls-port", "tcp", r.Addrs().TLS[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := echoPeer(t, "udp4", "127.0.0.1:0")
			cred := mint(t, testSecret, "stream-"+tc.name, time.Hour)
			c := newClient(t, tc.transport, tc.server, cred.Username, cred.Password)
			rc, err := c.Allocate()
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			defer rc.Close()
			// Before any channel: pion's client sends its first datagrams to
			// a peer as Send indications while it binds a channel.
			if got := echoCount(t, rc, peer.LocalAddr(), 1, 100, 5*time.Second); got != 1 {
				t.Fatalf("by Send indication: %d of 1 echoes came back", got)
			}
			waitFor(t, "a channel binding", 5*time.Second, func() bool {
				return r.metric(t, "traverse_relay_channels_active", "") >= 1
			})
			if got := echoCount(t, rc, peer.LocalAddr(), 300, 100, 10*time.Second); got != 300 {
				for _, m := range []string{dirToPeer, dirFromPeer} {
					t.Logf("packets %s: %v", m, r.metric(t, "traverse_relay_packets_total", m))
				}
				for _, m := range []string{"no_route", "send_error", "inbox_full", "stream_queue_full"} {
					t.Logf("dropped %s: %v", m, r.metric(t, "traverse_relay_dropped_packets_total", m))
				}
				t.Fatalf("by ChannelData, 300 back to back: %d of 300 echoes came back", got)
			}
		})
	}
}
