// Package turntest is a TURN client made of hand-built messages (pion/stun),
// for tests and the benchmark's load generator: it does what pion's client
// cannot be made to do — refresh on demand, change usernames on one
// allocation, use UDP over IPv6, or stay out of a measurement's way.
package turntest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// Client speaks TURN over Conn. With Server nil, Conn is a connected UDP
// socket and requests go out with Write; otherwise with WriteTo(Server).
type Client struct {
	Conn               net.PacketConn
	Server             net.Addr
	Username, Password string
	Realm              string // learned from the first 401 when empty
	Nonce              stun.Nonce
	// Relayed is the relayed address after Allocate.
	Relayed netip.AddrPort
}

// Error is a STUN error response.
type Error struct{ Code stun.ErrorCode }

func (e *Error) Error() string { return fmt.Sprintf("error response %d", e.Code) }

// Code is err's STUN error code, or 0.
func Code(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return 0
}

// ErrTimeout means no answer came.
var ErrTimeout = errors.New("turntest: no answer")

// Request sends method with setters, signed once the server's 401 has given
// a realm and nonce (and again after a 438), and returns the success response.
func (c *Client) Request(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 3; attempt++ {
		all := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		all = append(all, setters...)
		if c.Nonce != nil {
			all = append(all, stun.NewUsername(c.Username), stun.NewRealm(c.Realm), c.Nonce,
				stun.NewLongTermIntegrity(c.Username, c.Realm, c.Password))
		}
		all = append(all, stun.Fingerprint)
		req, err := stun.Build(all...)
		if err != nil {
			return nil, err
		}
		res, err := c.Exchange(req)
		if err != nil {
			return nil, err
		}
		if res.Type.Class != stun.ClassErrorResponse {
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		if code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce {
			var nonce stun.Nonce
			var realm stun.Realm
			if nonce.GetFrom(res) == nil && (c.Nonce == nil || code.Code == stun.CodeStaleNonce) {
				c.Nonce = nonce
				if realm.GetFrom(res) == nil && c.Realm == "" {
					c.Realm = realm.String()
				}
				continue
			}
		}
		return res, &Error{code.Code}
	}
	return nil, errors.New("turntest: too many retries")
}

// Exchange sends req and returns the response with its transaction ID,
// retransmitting twice over UDP.
func (c *Client) Exchange(req *stun.Message) (*stun.Message, error) {
	tries := 1
	if _, udp := c.Conn.(*net.UDPConn); udp {
		tries = 3
	}
	buf := make([]byte, 1600)
	for try := 0; try < tries; try++ {
		if err := c.send(req.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(2 * time.Second / time.Duration(tries))
		for {
			_ = c.Conn.SetReadDeadline(deadline)
			n, _, err := c.Conn.ReadFrom(buf)
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
			_ = c.Conn.SetReadDeadline(time.Time{})
			return res, nil
		}
	}
	return nil, ErrTimeout
}

func (c *Client) send(b []byte) error {
	if c.Server == nil {
		w, ok := c.Conn.(interface{ Write([]byte) (int, error) })
		if !ok {
			return errors.New("turntest: no Server and Conn is not connected")
		}
		_, err := w.Write(b)
		return err
	}
	_, err := c.Conn.WriteTo(b, c.Server)
	return err
}

// RequestedUDP asks for a UDP relay.
var RequestedUDP = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

// Lifetime is a LIFETIME attribute.
func Lifetime(d time.Duration) stun.RawAttribute {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(d/time.Second))
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: v}
}

// PeerAddress is an XOR-PEER-ADDRESS attribute.
func PeerAddress(p netip.AddrPort) stun.Setter { return peerAddress(p) }

type peerAddress netip.AddrPort

func (p peerAddress) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	return stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
}

// Allocate asks for a UDP relay and records the relayed address.
func (c *Client) Allocate() (netip.AddrPort, error) {
	res, err := c.Request(stun.MethodAllocate, RequestedUDP)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, err
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.Relayed = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return c.Relayed, nil
}

// Refresh refreshes the allocation; a zero lifetime deletes it.
func (c *Client) Refresh(d time.Duration) error {
	_, err := c.Request(stun.MethodRefresh, Lifetime(d))
	return err
}

// Permit installs a permission for peer.
func (c *Client) Permit(peer netip.AddrPort) error {
	_, err := c.Request(stun.MethodCreatePermission, PeerAddress(peer))
	return err
}

// BindChannel binds channel number ch to peer.
func (c *Client) BindChannel(ch uint16, peer netip.AddrPort) error {
	v := []byte{byte(ch >> 8), byte(ch), 0, 0}
	_, err := c.Request(stun.MethodChannelBind, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: v}, PeerAddress(peer))
	return err
}
