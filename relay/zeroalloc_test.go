//go:build !race

// The race detector allocates on its own account, so this guard runs
// without it (scripts/test runs it in a step of its own).

package relay

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/internal/testnet"
	"github.com/traverse/traverse/internal/turntest"
)

// TestRelayedPacketsAllocateNothing: a relayed round trip — client to peer
// and back, over a channel or as Send and Data indications — allocates
// nothing anywhere in the process. The client and the echo peer
// (testnet.EchoPeer) reuse their buffers, so every allocation counted would
// be the relay's.
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
	buf := make([]byte, 2048)
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{{"ChannelData", chanData}, {"Send indication", send.Raw}} {
		roundTrip := func() {
			if _, err := conn.WriteToUDPAddrPort(tc.pkt, server); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := conn.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatalf("%s: no echo: %v", tc.name, err)
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
