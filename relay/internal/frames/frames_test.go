package frames

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

// bufSize is a read buffer as the data path's, payload after the headroom.
const bufSize = 2048

var frameAddrs = []netip.AddrPort{
	netip.MustParseAddrPort("192.0.2.7:40000"),
	netip.MustParseAddrPort("[2001:db8::1]:3478"),
}

// TestBindingSuccessMatchesPion: the data path's Binding answer is byte for
// byte what pion/stun builds for pion's own handler.
func TestBindingSuccessMatchesPion(t *testing.T) {
	for _, src := range frameAddrs {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		got := AppendBindingSuccess(nil, req.Raw, src)
		want := stun.MustBuild(&stun.Message{TransactionID: req.TransactionID}, stun.BindingSuccess,
			&stun.XORMappedAddress{IP: net.IP(src.Addr().AsSlice()), Port: int(src.Port())}, stun.Fingerprint)
		if !bytes.Equal(got, want.Raw) {
			t.Errorf("%s:\n got %x\nwant %x", src, got, want.Raw)
		}
	}
}

// TestDataIndicationDecodes: a Data indication framed in place decodes with
// pion/stun to the peer and payload, padded to 4 bytes.
func TestDataIndicationDecodes(t *testing.T) {
	for _, peer := range frameAddrs {
		for _, n := range []int{0, 1, 5, 100} {
			buf := make([]byte, Headroom+bufSize)
			payload := bytes.Repeat([]byte{0xAB}, n)
			copy(buf[Headroom:], payload)
			// Garbage where the padding goes must not leak out.
			for i := Headroom + n; i < Headroom+n+4; i++ {
				buf[i] = 0xFF
			}
			raw := DataIndication(buf, n, peer, [12]byte{1, 2, 3})
			m := &stun.Message{Raw: append([]byte(nil), raw...)}
			if err := m.Decode(); err != nil {
				t.Fatalf("%s n=%d: %v", peer, n, err)
			}
			if m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
				t.Fatalf("type %v", m.Type)
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
				t.Fatal(err)
			}
			if got := netip.AddrPortFrom(netip.MustParseAddr(xa.IP.String()), uint16(xa.Port)); got != peer {
				t.Errorf("peer %s, want %s", got, peer)
			}
			data, err := m.Get(stun.AttrData)
			if err != nil || !bytes.Equal(data, payload) {
				t.Errorf("data %x (%v), want %x", data, err, payload)
			}
			if len(raw)%4 != 0 || bytes.Contains(raw[len(raw)-padded(n)+n:], []byte{0xFF}) {
				t.Errorf("padding: %x", raw)
			}
		}
	}
}

// TestSendIndicationParses reads what pion/stun builds, and refuses what is
// cut short.
func TestSendIndicationParses(t *testing.T) {
	for _, peer := range frameAddrs {
		payload := []byte("hello")
		m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
			&xorPeer{peer}, stun.RawAttribute{Type: stun.AttrData, Value: payload}, stun.Fingerprint)
		if STUNType(m.Raw) != TypeSendIndication {
			t.Fatalf("STUNType = %#x", STUNType(m.Raw))
		}
		got, data, ok := ParseSendIndication(m.Raw)
		if !ok || got != peer || !bytes.Equal(data, payload) {
			t.Errorf("parse = %s %q %v, want %s %q", got, data, ok, peer, payload)
		}
		for cut := 1; cut < len(m.Raw); cut++ {
			if STUNType(m.Raw[:cut]) != 0 {
				t.Errorf("a message cut to %d bytes passed", cut)
			}
		}
	}
}

type xorPeer struct{ ap netip.AddrPort }

func (x *xorPeer) AddTo(m *stun.Message) error {
	a := stun.XORMappedAddress{IP: net.IP(x.ap.Addr().AsSlice()), Port: int(x.ap.Port())}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

// TestChannelDataFrame: header, length and zeroed padding.
func TestChannelDataFrame(t *testing.T) {
	buf := make([]byte, Headroom+bufSize)
	copy(buf[Headroom:], "abcde")
	buf[Headroom+5] = 0xFF
	got := ChannelData(buf, 5, 0x4001)
	want := []byte{0x40, 0x01, 0, 5, 'a', 'b', 'c', 'd', 'e', 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
	if !IsChannelData(got) || IsChannelData(got[:3]) || IsChannelData([]byte{0x40, 1, 0, 9, 1}) {
		t.Error("IsChannelData")
	}
}

// TestStreamSize: a stream is cut where pion's framing cuts it: a STUN
// message at its header's length, ChannelData at its length padded to 4;
// too few bytes to tell ask for more; anything else ends the stream.
func TestStreamSize(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	badCookie := append([]byte(nil), req...)
	badCookie[4] ^= 0xFF
	for _, tc := range []struct {
		name    string
		p       []byte
		size    int
		channel bool
		err     error
	}{
		{"STUN", req, len(req), false, nil},
		{"STUN with the next frame behind it", append(append([]byte(nil), req...), 0x40, 0), len(req), false, nil},
		{"ChannelData padded", []byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, 12, true, nil},
		{"ChannelData header only", []byte{0x7F, 0xFF, 0x00, 0x00}, 4, true, nil},
		{"three bytes", []byte{0x40, 0x01, 0x00}, 0, false, nil},
		{"STUN before the cookie", req[:6], 0, false, nil},
		{"neither", []byte{0x80, 0, 0, 0}, 0, false, ErrNotFrame},
		{"no magic cookie", badCookie, 0, false, ErrNotFrame},
	} {
		size, channel, err := StreamSize(tc.p)
		if size != tc.size || channel != tc.channel || err != tc.err {
			t.Errorf("%s: %d, %v, %v; want %d, %v, %v", tc.name, size, channel, err, tc.size, tc.channel, tc.err)
		}
	}
}
