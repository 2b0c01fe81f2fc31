package main

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/internal/turntest"
)

// turnClient speaks just enough TURN over one connected UDP socket for the
// load: allocate, permit, bind a channel, refresh to zero. Data goes out as
// hand-built ChannelData or Send indications, so the client's own cost per
// packet is a copy and a syscall.
type turnClient struct {
	turntest.Client
	conn *net.UDPConn
}

func dialUDP(server netip.AddrPort) (*net.UDPConn, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return c, nil
}

func newTURNClient(server netip.AddrPort, secret string, user string) (*turnClient, error) {
	conn, err := dialUDP(server)
	if err != nil {
		return nil, err
	}
	cred, err := auth.Mint([]byte(secret), user, time.Hour, time.Now())
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &turnClient{Client: turntest.Client{Conn: conn, Username: cred.Username, Password: cred.Password}, conn: conn}, nil
}

func (c *turnClient) Close() error { return c.conn.Close() }

// allocateTURN opens a client and allocates. A 437 (allocation mismatch, from
// coturn) or a 401 on the signed request (traverse refuses a username other
// than the one that owns the 5-tuple's allocation) means the kernel gave us a
// source port whose 5-tuple still holds an allocation from an earlier run:
// the load generator's artefact, so it retries from a new socket.
func allocateTURN(server netip.AddrPort, secret, user string) (*turnClient, error) {
	var err error
	for try := 0; try < 5; try++ {
		var c *turnClient
		if c, err = newTURNClient(server, secret, user); err != nil {
			return nil, err
		}
		if err = c.allocate(); err == nil {
			return c, nil
		}
		_ = c.Close()
		if code := turntest.Code(err); code != int(stun.CodeAllocMismatch) && code != int(stun.CodeUnauthorized) {
			return nil, err
		}
	}
	return nil, err
}

func (c *turnClient) allocate() error {
	_, err := c.Allocate()
	return err
}

func (c *turnClient) permit(peer netip.AddrPort) error { return c.Permit(peer) }

func (c *turnClient) bindChannel(ch uint16, peer netip.AddrPort) error {
	return c.BindChannel(ch, peer)
}

// release deletes the allocation (Refresh with a zero lifetime).
func (c *turnClient) release() error { return c.Refresh(0) }

// framer turns a payload into what goes on the wire and back.
type framer interface {
	// frame returns the packet to send with the payload area to fill.
	frame(size int) (pkt, payload []byte)
	// unframe returns the payload of a received packet, or nil.
	unframe(pkt []byte) []byte
}

// rawFramer is plain UDP: the forwarder and the ping-pong.
type rawFramer struct{}

func (rawFramer) frame(size int) ([]byte, []byte) { b := make([]byte, size); return b, b }
func (rawFramer) unframe(pkt []byte) []byte       { return pkt }

// channelFramer wraps payloads in ChannelData.
type channelFramer struct{ ch uint16 }

func (f channelFramer) frame(size int) ([]byte, []byte) {
	b := make([]byte, 4+size)
	binary.BigEndian.PutUint16(b[0:], f.ch)
	binary.BigEndian.PutUint16(b[2:], uint16(size))
	return b, b[4:]
}

func (f channelFramer) unframe(pkt []byte) []byte { return unframeTURN(pkt) }

// sendFramer wraps payloads in Send indications.
type sendFramer struct{ peer netip.AddrPort }

func (f sendFramer) frame(size int) ([]byte, []byte) {
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		turntest.PeerAddress(f.peer), stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, size)})
	if err != nil {
		panic(err)
	}
	padded := (size + 3) &^ 3
	start := len(m.Raw) - padded
	return m.Raw, m.Raw[start : start+size]
}

func (f sendFramer) unframe(pkt []byte) []byte { return unframeTURN(pkt) }

// unframeTURN takes the payload out of ChannelData or a Data indication.
func unframeTURN(pkt []byte) []byte {
	if len(pkt) >= 4 && pkt[0]&0xC0 == 0x40 {
		n := int(binary.BigEndian.Uint16(pkt[2:]))
		if 4+n > len(pkt) {
			return nil
		}
		return pkt[4 : 4+n]
	}
	var m stun.Message
	m.Raw = pkt
	if m.Decode() != nil || m.Type.Method != stun.MethodData {
		return nil
	}
	v, err := m.Get(stun.AttrData)
	if err != nil {
		return nil
	}
	return v
}
