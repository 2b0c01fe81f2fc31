package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testnet"
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

// TestStreamPeerSpeaksFirst: a peer sends as soon as the permission exists,
// before the TCP client has sent anything on its allocation. Nothing may
// wait for the client to speak: all 300, sent back to back, arrive as Data
// indications, and the client's answers reach the peer.
func TestStreamPeerSpeaksFirst(t *testing.T) {
	r := startSharedPortRelay(t)
	cred := mint(t, testSecret, "quiet", time.Hour)
	c := newClient(t, "tcp", r.Addrs().TCP[0], cred.Username, cred.Password)
	rc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer rc.Close()
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	testnet.LargeBuffers(peer.(*net.UDPConn))
	if err := c.CreatePermission(peer.LocalAddr()); err != nil {
		t.Fatalf("create permission: %v", err)
	}

	const n = 300
	msg := make([]byte, 100)
	for i := 0; i < n; i++ {
		if _, err := peer.WriteTo(msg, rc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1600)
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := 0
	for got < n {
		m, from, err := rc.ReadFrom(buf)
		if err != nil {
			break
		}
		if m == len(msg) && from.String() == peer.LocalAddr().String() {
			got++
		}
	}
	if got != n {
		t.Fatalf("the client received %d of the %d datagrams the peer sent first", got, n)
	}
	// The client answers; the peer hears it.
	if _, err := rc.WriteTo([]byte("answer"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, _, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:m]) != "answer" {
		t.Fatalf("peer read %q, %v; want the client's answer", buf[:m], err)
	}
}

// TestStreamStalledClient: a TCP client that stops reading while a peer
// floods it costs a bounded queue, whose excess is dropped and counted; it
// is closed after the write timeout and its allocation ends; meanwhile
// another client's calls through the same relay go on.
func TestStreamStalledClient(t *testing.T) {
	defer func(q int, w time.Duration) { streamQueueBytes, streamWriteTimeout = q, w }(streamQueueBytes, streamWriteTimeout)
	streamQueueBytes, streamWriteTimeout = 64<<10, time.Second

	r := startSharedPortRelay(t)
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	// The stalled client: a raw TURN client on a TCP connection with a small
	// receive window, which stops reading once it has a permission.
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	tc, err := d.Dial("tcp4", r.Addrs().TCP[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	cred := mint(t, testSecret, "stalled", time.Hour)
	stalled := &rawClient{Conn: turn.NewSTUNConn(tc), Server: r.Addrs().TCP[0], Username: cred.Username, Password: cred.Password, Realm: "traverse"}
	relayed, err := stalled.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if err := stalled.Permit(netip.MustParseAddrPort(peer.LocalAddr().String())); err != nil {
		t.Fatalf("permit: %v", err)
	}

	// A healthy client beside it, over TCP too.
	echo := echoPeer(t, "udp4", "127.0.0.1:0")
	cred2 := mint(t, testSecret, "healthy", time.Hour)
	healthy := newClient(t, "tcp", r.Addrs().TCP[0], cred2.Username, cred2.Password)
	hrc, err := healthy.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer hrc.Close()

	// The flood, in paced batches so that the relay's own socket keeps up,
	// until the relay gives up on the client (the client's window, the
	// kernel's send buffer and the queue are full, and a write times out);
	// bounded in count and time.
	flood := make([]byte, 1000)
	to := net.UDPAddrFromAddrPort(relayed)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < 40000 && time.Now().Before(deadline); i++ {
		if _, err := peer.WriteTo(flood, to); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond)
		}
		if i%2000 == 1999 {
			roundTrip(t, hrc, echo.LocalAddr(), fmt.Sprintf("during the flood %d", i))
			if r.metric(t, "traverse_relay_stream_write_timeouts_total", "") >= 1 {
				break
			}
		}
	}
	waitMetric(t, r, "traverse_relay_dropped_packets_total", "stream_queue_full", 1)
	waitMetric(t, r, "traverse_relay_stream_write_timeouts_total", "", 1)
	waitFor(t, "the stalled client's allocation to end", 5*time.Second, func() bool {
		return r.metric(t, "traverse_relay_allocations_active", "") == 1
	})
	roundTrip(t, hrc, echo.LocalAddr(), "after the stalled client was closed")
}

// TestStreamHalfClose: a client that half-closes its connection (FIN after
// its last request) is torn down: its allocation ends and the relay closes
// the connection.
func TestStreamHalfClose(t *testing.T) {
	r := startSharedPortRelay(t)
	tc, err := net.DialTimeout("tcp4", r.Addrs().TCP[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	cred := mint(t, testSecret, "halfclose", time.Hour)
	c := &rawClient{Conn: turn.NewSTUNConn(tc), Server: r.Addrs().TCP[0], Username: cred.Username, Password: cred.Password, Realm: "traverse"}
	if _, err := c.Allocate(); err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if got := r.metric(t, "traverse_relay_allocations_active", ""); got != 1 {
		t.Fatalf("allocations_active = %v, want 1", got)
	}
	if err := tc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the allocation to end", 5*time.Second, func() bool {
		return r.metric(t, "traverse_relay_allocations_active", "") == 0
	})
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tc.Read(make([]byte, 64)); err != io.EOF {
		t.Fatalf("after the half-close the client read %d bytes, %v; want EOF", n, err)
	}
}
