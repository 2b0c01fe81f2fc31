// Package frames reads and writes the few STUN and TURN frames the relay's
// data path handles itself, byte for byte as pion reads and writes them (RFC
// 8489, RFC 8656): ChannelData, Send and Data indications, Binding success
// responses, and cheap looks at a datagram's kind. Everything else is parsed
// by pion. It is pure (no I/O, no state but a transaction ID source) and
// must import nothing of traverse's.
package frames

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	mrand "math/rand/v2"
	"net/netip"
)

// STUN message types the data path tells apart.
const (
	TypeBindingRequest = 0x0001
	TypeSendIndication = 0x0016
	TypeDataIndication = 0x0017
)

// Headroom fits the largest header the data path puts before a peer's
// payload: a Data indication to an IPv6 peer (STUN header 20, XOR-PEER-
// ADDRESS 4+20, DATA attribute header 4). ChannelData and DataIndication
// write their header into the Headroom bytes in front of the payload.
const Headroom = 48

const (
	stunHeaderSize  = 20
	magicCookie     = 0x2112A442
	typeBindingOK   = 0x0101
	attrXORMapped   = 0x0020
	attrXORPeer     = 0x0012
	attrData        = 0x0013
	attrFingerprint = 0x8028
	fingerprintXOR  = 0x5354554e
)

// IsChannelData reports a ChannelData message: a channel number in pion's
// range 0x4000-0x7FFF and a length that fits the datagram.
func IsChannelData(p []byte) bool {
	if len(p) < 4 || p[0] < 0x40 || p[0] > 0x7F {
		return false
	}
	return int(binary.BigEndian.Uint16(p[2:4])) <= len(p)-4
}

// STUNType returns a STUN message's type when p is a whole, well-formed
// STUN message (header, cookie, length, attributes within bounds), else 0.
func STUNType(p []byte) uint16 {
	if len(p) < stunHeaderSize || p[0]&0xC0 != 0 || binary.BigEndian.Uint32(p[4:8]) != magicCookie {
		return 0
	}
	size := int(binary.BigEndian.Uint16(p[2:4]))
	if size%4 != 0 || stunHeaderSize+size != len(p) {
		return 0
	}
	for off := stunHeaderSize; off < len(p); {
		if off+4 > len(p) {
			return 0
		}
		l := int(binary.BigEndian.Uint16(p[off+2 : off+4]))
		off += 4 + padded(l)
		if off > len(p) {
			return 0
		}
	}
	return binary.BigEndian.Uint16(p[0:2])
}

func padded(l int) int       { return (l + 3) &^ 3 }
func txidOf(p []byte) []byte { return p[8:stunHeaderSize] }
func putAttrHeader(b []byte, t, l int) {
	binary.BigEndian.PutUint16(b, uint16(t))
	binary.BigEndian.PutUint16(b[2:], uint16(l))
}

// ParseSendIndication returns a well-formed Send indication's first
// XOR-PEER-ADDRESS and DATA, as pion takes them. p must have passed
// STUNType, which bounds every attribute.
func ParseSendIndication(p []byte) (peer netip.AddrPort, data []byte, ok bool) {
	var havePeer, haveData bool
	for off := stunHeaderSize; off+4 <= len(p); {
		t := binary.BigEndian.Uint16(p[off : off+2])
		l := int(binary.BigEndian.Uint16(p[off+2 : off+4]))
		v := p[off+4 : off+4+l]
		switch {
		case t == attrXORPeer && !havePeer:
			if peer, havePeer = XORAddress(v, txidOf(p)); !havePeer {
				return peer, nil, false
			}
		case t == attrData && !haveData:
			data, haveData = v, true
		}
		off += 4 + padded(l)
	}
	return peer, data, havePeer && haveData
}

// XORAddress reads an XOR-*-ADDRESS value of a message with transaction
// ID txid; false for a malformed one.
func XORAddress(v, txid []byte) (netip.AddrPort, bool) {
	if len(v) < 4 || v[0] != 0 { // the family is a 16-bit field
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ (magicCookie >> 16)
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], magicCookie)
	copy(key[4:], txid)
	switch {
	case v[1] == 1 && len(v) == 8:
		var a [4]byte
		for i := range a {
			a[i] = v[4+i] ^ key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case v[1] == 2 && len(v) == 20:
		var a [16]byte
		for i := range a {
			a[i] = v[4+i] ^ key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// appendXORAddress appends an XOR-*-ADDRESS attribute of type t.
func appendXORAddress(b []byte, t int, ap netip.AddrPort, txid []byte) []byte {
	a := ap.Addr().Unmap()
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], magicCookie)
	copy(key[4:], txid)
	family, size := byte(1), 4
	if a.Is6() {
		family, size = 2, 16
	}
	var h [8]byte
	putAttrHeader(h[:], t, 4+size)
	h[5] = family
	binary.BigEndian.PutUint16(h[6:8], ap.Port()^(magicCookie>>16))
	b = append(b, h[:]...)
	raw := a.As16()
	ip := raw[16-size:]
	if size == 4 {
		a4 := a.As4()
		ip = a4[:]
	}
	for i := 0; i < size; i++ {
		b = append(b, ip[i]^key[i])
	}
	return b
}

// AppendBindingSuccess appends to b the answer to the Binding request req
// from src: XOR-MAPPED-ADDRESS then FINGERPRINT, as pion builds it.
func AppendBindingSuccess(b, req []byte, src netip.AddrPort) []byte {
	txid := txidOf(req)
	b = append(b, 0, 0, 0, 0, 0x21, 0x12, 0xA4, 0x42)
	binary.BigEndian.PutUint16(b[0:2], typeBindingOK)
	b = append(b, txid...)
	b = appendXORAddress(b, attrXORMapped, src, txid)
	// The length covers the fingerprint before the CRC is taken.
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)-stunHeaderSize+8))
	crc := crc32.ChecksumIEEE(b) ^ fingerprintXOR
	var f [8]byte
	putAttrHeader(f[:], attrFingerprint, 4)
	binary.BigEndian.PutUint32(f[4:], crc)
	return append(b, f[:]...)
}

// ChannelData puts a ChannelData header for channel num in front of the
// n-byte payload at buf[Headroom:], pads it to 4 bytes as pion does, and
// returns the message.
func ChannelData(buf []byte, n int, num uint16) []byte {
	start := Headroom - 4
	binary.BigEndian.PutUint16(buf[start:], num)
	binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	end := Headroom + padded(n)
	clear(buf[Headroom+n : end])
	return buf[start:end]
}

// DataIndication puts a Data indication header (XOR-PEER-ADDRESS, then
// the DATA attribute) in front of the n-byte payload at buf[Headroom:].
func DataIndication(buf []byte, n int, peer netip.AddrPort, txid [12]byte) []byte {
	addrSize := 8
	if peer.Addr().Unmap().Is6() {
		addrSize = 20
	}
	start := Headroom - 4 - (4 + addrSize) - stunHeaderSize
	h := buf[start:start:Headroom]
	h = append(h, 0, 0, 0, 0, 0x21, 0x12, 0xA4, 0x42)
	binary.BigEndian.PutUint16(h[0:2], TypeDataIndication)
	h = append(h, txid[:]...)
	h = appendXORAddress(h, attrXORPeer, peer, txid[:])
	h = h[:len(h)+4]
	putAttrHeader(h[len(h)-4:], attrData, n)
	end := Headroom + padded(n)
	clear(buf[Headroom+n : end])
	binary.BigEndian.PutUint16(buf[start+2:], uint16(end-start-stunHeaderSize))
	return buf[start:end]
}

// TxidSource makes transaction IDs for Data indications: unpredictable
// (seeded from crypto/rand) without a system call per message.
type TxidSource struct{ r *mrand.ChaCha8 }

// NewTxidSource seeds a source from crypto/rand.
func NewTxidSource() *TxidSource {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return &TxidSource{r: mrand.NewChaCha8(seed)}
}

// Next returns a fresh transaction ID.
func (t *TxidSource) Next() [12]byte {
	var id [12]byte
	_, _ = t.r.Read(id[:])
	return id
}

// ErrNotFrame ends a stream whose bytes are neither STUN nor ChannelData, as
// pion's framing ends it: after that the stream cannot be cut into frames
// again.
var ErrNotFrame = errors.New("relay: data is not a STUN or ChannelData frame")

// StreamSize returns the length of the frame at the head of p, a TCP or TLS
// byte stream, padding included, with channel set for ChannelData; 0 means
// more bytes are needed to tell. The rules are pion's: a STUN header with the
// magic cookie, or a channel number in 0x4000-0x7FFF.
func StreamSize(p []byte) (size int, channel bool, err error) {
	if len(p) < 4 {
		return 0, false, nil
	}
	length := int(binary.BigEndian.Uint16(p[2:4]))
	switch {
	case p[0] >= 0x40 && p[0] <= 0x7F:
		return 4 + padded(length), true, nil
	case p[0]&0xC0 != 0:
		return 0, false, ErrNotFrame
	case len(p) < 8:
		return 0, false, nil
	case binary.BigEndian.Uint32(p[4:8]) != magicCookie:
		return 0, false, ErrNotFrame
	}
	return stunHeaderSize + length, false, nil
}
