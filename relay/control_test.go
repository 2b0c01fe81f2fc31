package relay

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/internal/turntest"
)

// The control plane's answers, request by request, as RFC 8656 has them:
// each case sends one request over UDP with the raw client (signed, after
// the 401 that gives it a nonce) and checks the answer's code and
// attributes.

func TestControlAllocateErrors(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	cred := mint(t, testSecret, "ctl", time.Hour)
	server := r.Addrs().UDP[0]
	ipv6Family := stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{2, 0, 0, 0}}
	for _, tc := range []struct {
		name  string
		attrs []stun.Setter
		code  int
	}{
		{"no REQUESTED-TRANSPORT", nil, 400},
		{"TCP relaying", []stun.Setter{stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{6, 0, 0, 0}}}, 442},
		{"DONT-FRAGMENT", []stun.Setter{turntest.RequestedUDP, stun.RawAttribute{Type: stun.AttrDontFragment}}, 420},
		{"IPv6 relay address", []stun.Setter{turntest.RequestedUDP, ipv6Family}, 440},
		{"unknown RESERVATION-TOKEN", []stun.Setter{turntest.RequestedUDP,
			stun.RawAttribute{Type: stun.AttrReservationToken, Value: []byte("12345678")}}, 508},
		{"RESERVATION-TOKEN with EVEN-PORT", []stun.Setter{turntest.RequestedUDP,
			stun.RawAttribute{Type: stun.AttrReservationToken, Value: []byte("12345678")},
			stun.RawAttribute{Type: stun.AttrEvenPort, Value: []byte{0}}}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, "udp", server, cred.Username, cred.Password)
			res, err := c.Request(stun.MethodAllocate, tc.attrs...)
			if errCode(err) != tc.code {
				t.Fatalf("got %v, want %d", err, tc.code)
			}
			if tc.code == 420 {
				var unknown stun.UnknownAttributes
				if unknown.GetFrom(res) != nil || len(unknown) != 1 || unknown[0] != stun.AttrDontFragment {
					t.Errorf("420 lists %v, want DONT-FRAGMENT", unknown)
				}
			}
		})
	}
	if n := r.AllocationCount(); n != 0 {
		t.Errorf("%d allocations after refused requests", n)
	}
}

// TestControlChallenge: an unsigned request gets 401 with realm and nonce;
// a nonce the relay did not make gets 438 with a fresh one, which works.
func TestControlChallenge(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	cred := mint(t, testSecret, "ctl", time.Hour)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	req, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turntest.RequestedUDP, stun.Fingerprint)
	res, err := c.Exchange(req)
	if err != nil {
		t.Fatal(err)
	}
	var code stun.ErrorCodeAttribute
	var realm stun.Realm
	var nonce stun.Nonce
	if code.GetFrom(res) != nil || code.Code != 401 || realm.GetFrom(res) != nil || nonce.GetFrom(res) != nil {
		t.Fatalf("unsigned Allocate: %v", res)
	}
	if realm.String() != "traverse" {
		t.Errorf("realm %q", realm)
	}
	c.Realm, c.Nonce = "traverse", stun.NewNonce("0000000000000000ffffffffffffffffffffffff")
	if _, err := c.Allocate(); err != nil {
		t.Fatalf("after a foreign nonce: %v (438 then a fresh nonce should allocate)", err)
	}
	if string(c.Nonce) == "0000000000000000ffffffffffffffffffffffff" {
		t.Error("the client still holds the foreign nonce: no 438 came")
	}
}

// TestControlRetransmittedAllocate: the same Allocate again gets the same
// answer; another one on the same 5-tuple gets 437.
func TestControlRetransmittedAllocate(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	cred := mint(t, testSecret, "ctl", time.Hour)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	if _, err := c.Request(stun.MethodRefresh); errCode(err) != 437 {
		t.Fatalf("Refresh before Allocate: %v, want 437", err) // also gets the client a nonce
	}
	req, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turntest.RequestedUDP,
		stun.NewUsername(c.Username), stun.NewRealm(c.Realm), c.Nonce,
		stun.NewLongTermIntegrity(c.Username, c.Realm, c.Password), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	var relayed [2]stun.XORMappedAddress
	for i := range relayed {
		res, err := c.Exchange(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.Type.Class != stun.ClassSuccessResponse || relayed[i].GetFromAs(res, stun.AttrXORRelayedAddress) != nil {
			t.Fatalf("answer %d: %v", i, res)
		}
		if err := stun.MessageIntegrity(stun.NewLongTermIntegrity(c.Username, c.Realm, c.Password)).Check(res); err != nil {
			t.Fatalf("answer %d integrity: %v", i, err)
		}
	}
	if relayed[0].String() != relayed[1].String() {
		t.Errorf("retransmission answered %s, first %s", relayed[1], relayed[0])
	}
	if _, err := c.Allocate(); errCode(err) != 437 {
		t.Errorf("second Allocate: %v, want 437", err)
	}
	if n := r.AllocationCount(); n != 1 {
		t.Errorf("%d allocations, want 1", n)
	}
}

// TestControlPermissionsAndChannels: what CreatePermission and ChannelBind
// refuse, and that a binding may be refreshed.
func TestControlPermissionsAndChannels(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.Peers.Deny = []string{"127.0.0.99/32"}
	r := startRelay(t, cfg, false)
	cred := mint(t, testSecret, "ctl", time.Hour)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	peer := netip.MustParseAddrPort("127.0.0.1:5000")
	other := netip.MustParseAddrPort("127.0.0.1:5001")
	if err := c.Permit(peer); errCode(err) != 437 {
		t.Fatalf("CreatePermission before Allocate: %v, want 437", err)
	}
	if err := c.BindChannel(0x4000, peer); errCode(err) != 437 {
		t.Fatalf("ChannelBind before Allocate: %v, want 437", err)
	}
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		code int
	}{
		{"permission to IPv6 peer", c.Permit(netip.MustParseAddrPort("[::1]:5000")), 443},
		{"permission to denied peer", c.Permit(netip.MustParseAddrPort("127.0.0.99:5000")), 403},
		{"permission without peer", errOf(c.Request(stun.MethodCreatePermission)), 400},
		{"channel below range", c.BindChannel(0x3FFF, peer), 400},
		{"channel above range", c.BindChannel(0x8000, peer), 400},
		{"channel to denied peer", c.BindChannel(0x4001, netip.MustParseAddrPort("127.0.0.99:5000")), 403},
		{"channel", c.BindChannel(0x4000, peer), 0},
		{"same channel again", c.BindChannel(0x4000, peer), 0},
		{"channel to another peer", c.BindChannel(0x4000, other), 400},
		{"peer on another channel", c.BindChannel(0x4001, peer), 400},
		{"unknown method", errOf(c.Request(stun.Method(0x00F))), 400},
	} {
		if errCode(tc.err) != tc.code || (tc.code == 0) != (tc.err == nil) {
			t.Errorf("%s: %v, want %d", tc.name, tc.err, tc.code)
		}
	}
	if n := r.metric(t, "traverse_relay_channels_active", ""); n != 1 {
		t.Errorf("channels_active %v, want 1", n)
	}
	if n := r.metric(t, "traverse_relay_permissions_active", ""); n != 1 {
		t.Errorf("permissions_active %v, want 1 (the channel's peer)", n)
	}
}

func errOf(_ *stun.Message, err error) error { return err }

// TestControlLifetimes: permissions and channels end after their lifetime,
// the allocation after its own, and ending it frees its port and tells
// OnAllocationEnded; Refresh moves the allocation's end.
func TestControlLifetimes(t *testing.T) {
	var mu sync.Mutex
	var ended []Allocation
	opts := Options{Config: testConfig(), OnAllocationEnded: func(a Allocation) {
		mu.Lock()
		ended = append(ended, a)
		mu.Unlock()
	}}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cred := mint(t, testSecret, "ctl", time.Hour)
	c := newRawClient(t, "udp", s.Addrs().UDP[0], cred.Username, cred.Password)
	res, err := c.Request(stun.MethodAllocate, turntest.RequestedUDP, turntest.Lifetime(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := res.Get(stun.AttrLifetime); len(v) != 4 || v[2] != 0x07 || v[3] != 0x08 { // 1800 s
		t.Errorf("granted LIFETIME %x, want 1800 s", v)
	}
	peer := netip.MustParseAddrPort("127.0.0.1:5000")
	if err := c.BindChannel(0x4000, peer); err != nil {
		t.Fatal(err)
	}
	if err := c.Permit(netip.MustParseAddrPort("127.0.0.2:5000")); err != nil {
		t.Fatal(err)
	}
	_, live := s.allocs.lifetimes(time.Now())
	rc := live[0]
	routes := func() (perms, chans int) {
		rt := rc.routes.Load()
		return rt.perms.len(), rt.channels.len()
	}
	now, mono := time.Now(), monoNow()
	s.sweepLifetimes(now, mono+int64(4*time.Minute))
	if p, ch := routes(); p != 2 || ch != 1 {
		t.Fatalf("after 4 min: %d permissions, %d channels; want 2, 1", p, ch)
	}
	s.sweepLifetimes(now, mono+int64(6*time.Minute))
	if p, ch := routes(); p != 0 || ch != 1 {
		t.Fatalf("after 6 min: %d permissions, %d channels; want 0, 1 (a channel outlives a permission)", p, ch)
	}
	s.sweepLifetimes(now, mono+int64(11*time.Minute))
	if p, ch := routes(); p != 0 || ch != 0 {
		t.Fatalf("after 11 min: %d permissions, %d channels; want none", p, ch)
	}
	if s.AllocationCount() != 1 {
		t.Fatal("the allocation ended with its channel")
	}
	if err := c.Refresh(10 * time.Minute); err != nil {
		t.Fatal(err)
	}
	s.sweepLifetimes(now.Add(9*time.Minute), mono)
	if s.AllocationCount() != 1 {
		t.Fatal("the refreshed allocation ended before its new lifetime")
	}
	s.sweepLifetimes(time.Now().Add(10*time.Minute+time.Second), mono)
	if s.AllocationCount() != 0 {
		t.Fatal("the allocation outlived its lifetime")
	}
	mu.Lock()
	if len(ended) != 1 || ended[0].Username != cred.Username {
		t.Errorf("OnAllocationEnded heard %v", ended)
	}
	mu.Unlock()
	// Its port is free: binding it works.
	port := int(rc.key.Port())
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatalf("relay port %d still held: %v", port, err)
	}
	_ = conn.Close()
	if err := c.Refresh(10 * time.Minute); errCode(err) != 437 {
		t.Errorf("Refresh of the ended allocation: %v, want 437", err)
	}
}

// TestControlEvenPort: EVEN-PORT gets an even relay port.
func TestControlEvenPort(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	for i := 0; i < 4; i++ {
		cred := mint(t, testSecret, "even", time.Hour)
		c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
		res, err := c.Request(stun.MethodAllocate, turntest.RequestedUDP, stun.RawAttribute{Type: stun.AttrEvenPort, Value: []byte{0}})
		if err != nil {
			t.Fatal(err)
		}
		var relayed stun.XORMappedAddress
		if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil || relayed.Port%2 != 0 {
			t.Fatalf("relayed %v (%v), want an even port", relayed, err)
		}
	}
}

// TestCloseEndsAllocations: Close ends every allocation, UDP and TCP, and
// OnAllocationEnded hears of each (usage is written from it).
func TestCloseEndsAllocations(t *testing.T) {
	var mu sync.Mutex
	ended := map[string]bool{}
	s, err := New(Options{Config: testConfig(), OnAllocationEnded: func(a Allocation) {
		mu.Lock()
		ended[a.Transport] = true
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []string{"udp", "tcp"} {
		server := s.Addrs().UDP[0]
		if tr == "tcp" {
			server = s.Addrs().TCP[0]
		}
		cred := mint(t, testSecret, "close", time.Hour)
		if _, err := newRawClient(t, tr, server, cred.Username, cred.Password).Allocate(); err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !ended["udp"] || !ended["tcp"] || s.AllocationCount() != 0 {
		t.Errorf("ended %v, %d left", ended, s.AllocationCount())
	}
}
