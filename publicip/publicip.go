// Package publicip finds the relay's public IPv4 address behind a 1:1 NAT by
// asking STUN servers for the server-reflexive address of the relay's bind
// IP, as eturnal does. All servers are asked from one socket and must agree.
package publicip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v3"
)

// DefaultTimeout bounds the whole detection.
const DefaultTimeout = 5 * time.Second

// retransmit is the wait before a Binding request is sent again (UDP may
// lose it).
const retransmit = 500 * time.Millisecond

// Answer is what one STUN server said.
type Answer struct {
	Server string
	Addr   netip.Addr // valid when the server answered
	Err    error      // why it did not
}

// Detect asks every server for bindIP's reflexive address and returns the
// address they agree on. Servers that do not answer are tolerated when
// another one answers; disagreement, or no answer at all, is an error that
// names the servers. timeout 0 means DefaultTimeout.
func Detect(ctx context.Context, bindIP string, servers []string, timeout time.Duration) (netip.Addr, []Answer, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := net.ListenPacket("udp4", net.JoinHostPort(bindIP, "0"))
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("stun socket on %s: %w", bindIP, err)
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(d)
	}

	answers := make([]Answer, len(servers))
	type query struct {
		i    int
		to   *net.UDPAddr
		req  []byte
		txID [stun.TransactionIDSize]byte
	}
	var pending []*query
	for i, srv := range servers {
		answers[i].Server = srv
		to, err := resolve(ctx, srv)
		if err != nil {
			answers[i].Err = err
			continue
		}
		m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		pending = append(pending, &query{i: i, to: to, req: m.Raw, txID: m.TransactionID})
	}

	open := len(pending)
	buf := make([]byte, 1500)
	for open > 0 && ctx.Err() == nil {
		for _, q := range pending {
			if q != nil && !answers[q.i].Addr.IsValid() {
				_, _ = conn.WriteTo(q.req, q.to)
			}
		}
		round := time.Now().Add(retransmit)
		if d, ok := ctx.Deadline(); ok && d.Before(round) {
			round = d
		}
		_ = conn.SetReadDeadline(round)
		for open > 0 {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				break // retransmit, or the deadline
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil {
				continue
			}
			for j, q := range pending {
				if q == nil || q.txID != m.TransactionID {
					continue
				}
				var xor stun.XORMappedAddress
				if err := xor.GetFrom(m); err != nil {
					answers[q.i].Err = fmt.Errorf("answer without XOR-MAPPED-ADDRESS: %w", err)
				} else if ip, ok := netip.AddrFromSlice(xor.IP); ok {
					answers[q.i].Addr = ip.Unmap()
				}
				pending[j] = nil
				open--
			}
		}
	}
	for _, q := range pending {
		if q != nil {
			answers[q.i].Err = errors.New("no answer within " + timeout.String())
		}
	}
	ip, err := agree(answers)
	return ip, answers, err
}

// agree is the one address the answering servers gave.
func agree(answers []Answer) (netip.Addr, error) {
	var ip netip.Addr
	disagree := false
	for _, a := range answers {
		if !a.Addr.IsValid() {
			continue
		}
		if ip.IsValid() && a.Addr != ip {
			disagree = true
		}
		if !ip.IsValid() {
			ip = a.Addr
		}
	}
	switch {
	case disagree:
		return netip.Addr{}, fmt.Errorf("STUN servers disagree on the public IP: %s", describe(answers))
	case !ip.IsValid():
		return netip.Addr{}, fmt.Errorf("no STUN server answered: %s", describe(answers))
	case !ip.Is4():
		return netip.Addr{}, fmt.Errorf("STUN servers gave %s, not an IPv4 address: %s", ip, describe(answers))
	}
	return ip, nil
}

func describe(answers []Answer) string {
	parts := make([]string, len(answers))
	for i, a := range answers {
		if a.Addr.IsValid() {
			parts[i] = a.Server + " says " + a.Addr.String()
		} else {
			parts[i] = a.Server + ": " + a.Err.Error()
		}
	}
	return strings.Join(parts, "; ")
}

// Answered lists the servers that gave an address.
func Answered(answers []Answer) []string {
	var out []string
	for _, a := range answers {
		if a.Addr.IsValid() {
			out = append(out, a.Server)
		}
	}
	return out
}

func resolve(ctx context.Context, server string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	if len(ips) == 0 {
		return nil, errors.New("lookup: no IPv4 address")
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, err
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), nil
}
