package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/traverse/traverse/relay/internal/frames"
	"github.com/traverse/traverse/relay/internal/sockio"
)

// TestDataPathFollowsPionState: the data path relays ChannelData both ways
// while the channel lives and stops the moment pion ends the allocation; a
// peer's datagram without a permission never reaches the client; all of it
// is counted.
func TestDataPathFollowsPionState(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	server := r.Addrs().UDP[0]
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	cred := mint(t, testSecret, "dora", time.Hour)
	c := newRawClient(t, "udp", server, cred.Username, cred.Password)
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	const ch = 0x4001
	if err := c.BindChannel(ch, peerAP); err != nil {
		t.Fatal(err)
	}
	conn := c.Conn
	send := func(payload string) {
		msg := make([]byte, 4+len(payload))
		binary.BigEndian.PutUint16(msg[0:], ch)
		binary.BigEndian.PutUint16(msg[2:], uint16(len(payload)))
		copy(msg[4:], payload)
		if _, err := conn.WriteTo(msg, server); err != nil {
			t.Fatal(err)
		}
	}
	// recv returns the next ChannelData payload, or "" after the timeout.
	recv := func(timeout time.Duration) string {
		buf := make([]byte, 1600)
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return ""
			}
			if frames.IsChannelData(buf[:n]) && binary.BigEndian.Uint16(buf[0:2]) == ch {
				l := int(binary.BigEndian.Uint16(buf[2:4]))
				if n%4 != 0 {
					t.Errorf("ChannelData of %d bytes is not padded", n)
				}
				return string(buf[4 : 4+l])
			}
		}
	}
	send("ping")
	if got := recv(3 * time.Second); got != "ping" {
		t.Fatalf("echo = %q, want ping", got)
	}
	if to, from := r.metric(t, "traverse_relay_packets_total", dirToPeer), r.metric(t, "traverse_relay_packets_total", dirFromPeer); to < 1 || from < 1 {
		t.Errorf("packets to/from peer = %v/%v, want both counted", to, from)
	}

	// A stranger (no permission) writes to the relayed address: dropped.
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	before := r.metric(t, "traverse_relay_dropped_packets_total", "no_route")
	if _, err := stranger.WriteToUDPAddrPort([]byte("intruder"), relayed); err != nil {
		t.Fatal(err)
	}
	if got := recv(300 * time.Millisecond); got != "" {
		t.Fatalf("client got %q from a peer without permission", got)
	}
	waitMetric(t, r, "traverse_relay_dropped_packets_total", "no_route", before+1)

	// pion ends the allocation: ChannelData on the old 5-tuple is dropped.
	if err := c.Refresh(0); err != nil {
		t.Fatal(err)
	}
	before = r.metric(t, "traverse_relay_dropped_packets_total", "no_route")
	send("after")
	if got := recv(300 * time.Millisecond); got != "" {
		t.Fatalf("relayed %q after the allocation ended", got)
	}
	waitMetric(t, r, "traverse_relay_dropped_packets_total", "no_route", before+1)
}

// TestDataPathDataIndication: with a permission and no channel, a peer's
// datagram reaches a UDP client as a Data indication, and a Send indication
// reaches the peer.
func TestDataPathDataIndication(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	server := r.Addrs().UDP[0]
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	cred := mint(t, testSecret, "ed", time.Hour)
	c := newRawClient(t, "udp", server, cred.Username, cred.Password)
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Permit(peerAP); err != nil {
		t.Fatal(err)
	}
	// Send indication: client -> peer.
	ind := make([]byte, frames.Headroom+sockio.ReadBuffer)
	copy(ind[frames.Headroom:], "to peer")
	msg := frames.DataIndication(ind, 7, peerAP, [12]byte{9})
	binary.BigEndian.PutUint16(msg[0:2], frames.TypeSendIndication)
	if _, err := c.Conn.WriteTo(msg, server); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "to peer" || from.Port() != relayed.Port() {
		t.Fatalf("peer got %q from %s (%v), want \"to peer\" from the relayed port %d", buf[:n], from, err, relayed.Port())
	}
	// Peer -> client as a Data indication.
	if _, err := peer.WriteToUDPAddrPort([]byte("to client"), from); err != nil {
		t.Fatal(err)
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err = c.Conn.ReadFrom(buf)
	if err != nil || frames.STUNType(buf[:n]) != frames.TypeDataIndication {
		t.Fatalf("client got %x (%v), want a Data indication", buf[:n], err)
	}
	got, data, ok := frames.ParseSendIndication(buf[:n])
	if !ok || got != peerAP || !bytes.Equal(data, []byte("to client")) {
		t.Fatalf("Data indication from %s with %q, want %s and \"to client\"", got, data, peerAP)
	}
}

func waitMetric(t *testing.T, r *testRelay, name, label string, atLeast float64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for r.metric(t, name, label) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} = %v, want at least %v", name, label, r.metric(t, name, label), atLeast)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
