package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
)

// checkRelay runs a STUN Binding and a TURN allocate → permission → relay
// round trip on the first listener of each transport. The peer is a second
// allocation on the same server, reached at its relayed address, so the
// data goes out and back through the relay as a remote peer's would.
func checkRelay(ctx context.Context, r *Report, cfg config.Config, opts Options) {
	if !cfg.Relay.Enabled {
		return
	}
	user, pass, err := credential(cfg)
	if err != nil {
		r.add("turn credential", Fail, "%v", err)
		return
	}
	transports := []struct{ kind, addr string }{}
	if len(cfg.Listen.UDP) > 0 {
		transports = append(transports, struct{ kind, addr string }{"udp", cfg.Listen.UDP[0]})
	}
	if len(cfg.Listen.TCP) > 0 {
		transports = append(transports, struct{ kind, addr string }{"tcp", cfg.Listen.TCP[0]})
	}
	if len(cfg.Listen.TLS) > 0 && cfg.TLS.Enabled() {
		transports = append(transports, struct{ kind, addr string }{"tls", cfg.Listen.TLS[0]})
	}
	// The peer allocation goes over UDP when there is a UDP listener.
	peerKind, peerAddr := transports[0].kind, dialable(transports[0].addr)
	for _, tr := range transports {
		target := dialable(tr.addr)
		d := dialer{kind: tr.kind, target: target, user: user, pass: pass, timeout: opts.Timeout, serverName: serverName(cfg)}
		c, conn, err := d.client()
		if err != nil {
			r.add("stun "+tr.kind, Fail, "%s: %v", target, err)
			r.add("turn "+tr.kind, Fail, "%s: not reached", target)
			continue
		}
		refl, err := c.SendBindingRequest()
		if err != nil {
			r.add("stun "+tr.kind, Fail, "%s: Binding: %v", target, err)
			r.add("turn "+tr.kind, Fail, "%s: not reached", target)
			c.Close()
			_ = conn.Close()
			continue
		}
		r.add("stun "+tr.kind, OK, "%s: this host seen as %s", target, refl)
		relayed, err := roundTrip(ctx, c, dialer{kind: peerKind, target: peerAddr, user: user, pass: pass, timeout: opts.Timeout, serverName: d.serverName})
		if err != nil {
			r.add("turn "+tr.kind, Fail, "%s: %v", target, err)
		} else {
			r.add("turn "+tr.kind, OK, "%s: allocate → permission → relay round trip via relayed address %s", target, relayed)
		}
		c.Close()
		_ = conn.Close()
	}
}

func serverName(cfg config.Config) string {
	if cfg.Issuer.PublicHost != "" {
		return cfg.Issuer.PublicHost
	}
	if cfg.TLS.ACME.Enabled() {
		return cfg.TLS.ACME.Domains[0]
	}
	return ""
}

// credential mints a short TURN REST credential from the first secret, or
// uses the first static user.
func credential(cfg config.Config) (string, string, error) {
	if len(cfg.Auth.Secrets) > 0 {
		c, err := auth.NewSecrets(cfg.Auth.Secrets).Mint("traverse-doctor", 10*time.Minute, time.Now())
		return c.Username, c.Password, err
	}
	if len(cfg.Auth.Users) > 0 {
		return cfg.Auth.Users[0].Name, cfg.Auth.Users[0].Password, nil
	}
	return "", "", errors.New("no auth.secrets or auth.users to authenticate with")
}

type dialer struct {
	kind, target, user, pass, serverName string
	timeout                              time.Duration
}

// client connects a pion TURN client over the transport.
func (d dialer) client() (*turn.Client, net.PacketConn, error) {
	var conn net.PacketConn
	switch d.kind {
	case "udp":
		pc, err := net.ListenPacket("udp", "")
		if err != nil {
			return nil, nil, err
		}
		conn = pc
	case "tcp", "tls":
		c, err := net.DialTimeout("tcp", d.target, d.timeout)
		if err != nil {
			return nil, nil, err
		}
		if d.kind == "tls" {
			// The certificate has its own check; this one is about TURN.
			tc := tls.Client(c, &tls.Config{ServerName: d.serverName, InsecureSkipVerify: true, //nolint:gosec // see above
				NextProtos: []string{"stun.turn"}, MinVersion: tls.VersionTLS12})
			_ = tc.SetDeadline(time.Now().Add(d.timeout))
			if err := tc.Handshake(); err != nil {
				_ = c.Close()
				return nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			_ = tc.SetDeadline(time.Time{})
			c = tc
		}
		conn = turn.NewSTUNConn(c)
	}
	quiet := logging.NewDefaultLoggerFactory()
	quiet.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: d.target, TURNServerAddr: d.target, Conn: conn,
		Username: d.user, Password: d.pass, RTO: 300 * time.Millisecond, LoggerFactory: quiet})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		_ = conn.Close()
		return nil, nil, err
	}
	return c, conn, nil
}

// roundTrip allocates on c, allocates a peer through pd, and sends a
// datagram from c's allocation to the peer's relayed address and back.
func roundTrip(ctx context.Context, c *turn.Client, pd dialer) (net.Addr, error) {
	rc, err := c.Allocate()
	if err != nil {
		return nil, fmt.Errorf("allocate: %w", err)
	}
	defer rc.Close()
	pc, pconn, err := pd.client()
	if err != nil {
		return rc.LocalAddr(), fmt.Errorf("peer allocation: %w", err)
	}
	defer func() { pc.Close(); _ = pconn.Close() }()
	peer, err := pc.Allocate()
	if err != nil {
		return rc.LocalAddr(), fmt.Errorf("peer allocation: %w", err)
	}
	defer peer.Close()
	// The peer permits us first (its permission is created by its send).
	if _, err := peer.WriteTo([]byte("permit"), rc.LocalAddr()); err != nil {
		return rc.LocalAddr(), fmt.Errorf("permission refused for %s (peer policy?): %w", rc.LocalAddr(), err)
	}
	go func() { // the peer echoes what it gets
		buf := make([]byte, 1500)
		for {
			n, from, err := peer.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = peer.WriteTo(buf[:n], from)
		}
	}()
	msg := []byte("traverse doctor round trip")
	buf := make([]byte, 1500)
	deadline := time.Now().Add(pd.timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := rc.WriteTo(msg, peer.LocalAddr()); err != nil {
			return rc.LocalAddr(), fmt.Errorf("permission or send to %s refused (peer policy?): %w", peer.LocalAddr(), err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := rc.ReadFrom(buf)
		if err == nil && string(buf[:n]) == string(msg) {
			return rc.LocalAddr(), nil
		}
	}
	return rc.LocalAddr(), fmt.Errorf("allocated %s but no data came back from peer %s within %s (behind 1:1 NAT without hairpinning, try from outside)",
		rc.LocalAddr(), peer.LocalAddr(), pd.timeout)
}
