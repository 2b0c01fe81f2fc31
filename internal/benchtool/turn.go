package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/auth"
)

// turnClient speaks just enough TURN over one connected UDP socket for the
// load: allocate, permit, bind a channel, refresh to zero. Data goes out as
// hand-built ChannelData or Send indications, so the client's own cost per
// packet is a copy and a syscall.
type turnClient struct {
	conn                      *net.UDPConn
	username, password, realm string
	nonce                     stun.Nonce
	relayed                   netip.AddrPort
}

var errTimeout = errors.New("no answer")

// stunError is an error response.
type stunError struct{ code stun.ErrorCode }

func (e *stunError) Error() string { return fmt.Sprintf("error response %d", e.code) }

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
	return &turnClient{conn: conn, username: cred.Username, password: cred.Password}, nil
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
		var se *stunError
		if !errors.As(err, &se) || (se.code != stun.CodeAllocMismatch && se.code != stun.CodeUnauthorized) {
			return nil, err
		}
	}
	return nil, err
}

// request sends a signed request (after the 401 that gives realm and nonce)
// and returns the success response.
func (c *turnClient) request(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 3; attempt++ {
		all := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		all = append(all, setters...)
		if c.nonce != nil {
			all = append(all, stun.NewUsername(c.username), stun.NewRealm(c.realm), c.nonce,
				stun.NewLongTermIntegrity(c.username, c.realm, c.password))
		}
		all = append(all, stun.Fingerprint)
		req, err := stun.Build(all...)
		if err != nil {
			return nil, err
		}
		res, err := c.exchange(req)
		if err != nil {
			return nil, err
		}
		if res.Type.Class != stun.ClassErrorResponse {
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		if code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce {
			var realm stun.Realm
			var nonce stun.Nonce
			if nonce.GetFrom(res) == nil && realm.GetFrom(res) == nil && (c.nonce == nil || code.Code == stun.CodeStaleNonce) {
				c.nonce, c.realm = nonce, realm.String()
				continue
			}
		}
		return res, &stunError{code.Code}
	}
	return nil, errors.New("too many retries")
}

// exchange sends req and waits for its answer, retransmitting twice.
func (c *turnClient) exchange(req *stun.Message) (*stun.Message, error) {
	buf := make([]byte, 1600)
	for try := 0; try < 3; try++ {
		if _, err := c.conn.Write(req.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(time.Second)
		for {
			_ = c.conn.SetReadDeadline(deadline)
			n, err := c.conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, err
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() != nil || res.TransactionID != req.TransactionID {
				continue
			}
			_ = c.conn.SetReadDeadline(time.Time{})
			return res, nil
		}
	}
	return nil, errTimeout
}

var requestedUDP = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

func lifetime(d time.Duration) stun.RawAttribute {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(d/time.Second))
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: v}
}

func peerAttr(p netip.AddrPort) stun.Setter {
	return attrSetter(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: p.Addr().AsSlice(), Port: int(p.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

type attrSetter func(m *stun.Message) error

func (f attrSetter) AddTo(m *stun.Message) error { return f(m) }

func (c *turnClient) allocate() error {
	res, err := c.request(stun.MethodAllocate, requestedUDP)
	if err != nil {
		return err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return err
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.relayed = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return nil
}

func (c *turnClient) permit(peer netip.AddrPort) error {
	_, err := c.request(stun.MethodCreatePermission, peerAttr(peer))
	return err
}

func (c *turnClient) bindChannel(ch uint16, peer netip.AddrPort) error {
	v := []byte{byte(ch >> 8), byte(ch), 0, 0}
	_, err := c.request(stun.MethodChannelBind, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: v}, peerAttr(peer))
	return err
}

// release deletes the allocation (Refresh with a zero lifetime).
func (c *turnClient) release() error {
	_, err := c.request(stun.MethodRefresh, lifetime(0))
	return err
}

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
		peerAttr(f.peer), stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, size)})
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
