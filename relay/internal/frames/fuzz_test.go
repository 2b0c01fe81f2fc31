package frames

import (
	"bytes"
	"net"
	"testing"

	"github.com/pion/stun/v3"
)

// FuzzFrames: the data path's own STUN and ChannelData readers (datagram and
// stream) never panic,
// and whatever they take as a Send indication pion/stun decodes the same.
func FuzzFrames(f *testing.F) {
	send := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		&xorPeer{frameAddrs[0]}, stun.RawAttribute{Type: stun.AttrData, Value: []byte("hi")})
	f.Add(send.Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, p []byte) {
		_ = IsChannelData(p)
		if size, channel, err := StreamSize(p); err == nil && size != 0 && (size < 4 || channel && size%4 != 0) {
			t.Fatalf("stream frame of %d bytes (channel %v)", size, channel)
		}
		if STUNType(p) != TypeSendIndication {
			return
		}
		peer, data, ok := ParseSendIndication(p)
		m := &stun.Message{Raw: append([]byte(nil), p...)}
		if err := m.Decode(); err != nil {
			t.Fatalf("we took a message pion/stun refuses: %v", err)
		}
		if !ok {
			return
		}
		want, err := m.Get(stun.AttrData)
		if err != nil || !bytes.Equal(want, data) {
			t.Fatalf("data %x, pion/stun %x (%v)", data, want, err)
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil || xa.Port != int(peer.Port()) || !xa.IP.Equal(net.IP(peer.Addr().AsSlice())) {
			t.Fatalf("peer %s, pion/stun %s (%v)", peer, xa, err)
		}
	})
}
