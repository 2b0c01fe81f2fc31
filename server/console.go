package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/console"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
)

// This file adapts the issuer, the relay and the certificate store to the
// console's interfaces. Each adapter is small on purpose: when the usage,
// fleet and certs services land, they replace the local ones here.

// newConsole builds the console for the issuer's listener, or nil when
// console.enabled is false.
func newConsole(s *Server, svc *issuer.Service, cfg config.Config) (*console.Console, error) {
	if !cfg.Console.Enabled {
		return nil, nil
	}
	opts := console.Options{
		Auth:       consoleAuth{svc},
		Minter:     consoleMinter{s, svc},
		Sessions:   localSessions{s},
		Nodes:      localNode{s},
		Metrics:    s.reg,
		SessionTTL: cfg.Console.SessionTTL,
		Log:        s.log.Named("console"),
		Now:        s.now,
	}
	if s.certs != nil {
		opts.Certificates = servedCertificates{s}
	}
	// Usage stays nil until the usage service exists: the page says so.
	return console.New(opts)
}

// withConsole serves the console under console.Prefix and everything else
// with the issuer's handler.
func withConsole(api http.Handler, c *console.Console) http.Handler {
	if c == nil {
		return api
	}
	ui := c.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/console" || strings.HasPrefix(p, console.Prefix) {
			ui.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// consoleAuth signs in with the issuer's own authentication (the Tokens
// resource's credentials), failures counted there by reason.
type consoleAuth struct{ svc *issuer.Service }

func (a consoleAuth) SignIn(ctx context.Context, sid, secret string) (console.Identity, error) {
	p, err := a.svc.Authenticate(ctx, sid, secret)
	if errors.Is(err, issuer.ErrUnauthenticated) {
		return console.Identity{}, console.ErrBadCredentials
	}
	if err != nil {
		return console.Identity{}, err
	}
	return console.Identity{
		AccountSid: p.Account.Sid, FriendlyName: p.Account.FriendlyName, KeySid: p.KeySid,
		Primary: p.Account.ParentSid == "", Proof: secretDigest(secret),
	}, nil
}

// StillValid re-reads the account (and key) behind a console session: it
// must still be active, and its secret the one signed in with.
func (a consoleAuth) StillValid(ctx context.Context, id console.Identity) error {
	acct, err := a.svc.Account(ctx, id.AccountSid)
	if errors.Is(err, issuer.ErrNotFound) {
		return console.ErrBadCredentials
	}
	if err != nil {
		return err
	}
	secret := acct.AuthToken
	if id.KeySid != "" {
		k, err := a.svc.Key(ctx, id.AccountSid, id.KeySid)
		if errors.Is(err, issuer.ErrNotFound) {
			return console.ErrBadCredentials
		}
		if err != nil {
			return err
		}
		secret = k.Secret
	}
	if acct.Status != store.StatusActive || subtle.ConstantTimeCompare([]byte(secretDigest(secret)), []byte(id.Proof)) != 1 {
		return console.ErrBadCredentials
	}
	return nil
}

// secretDigest is what a console session remembers of the secret it signed
// in with: enough to notice a rotation, useless to sign in with.
func secretDigest(secret string) string {
	d := sha256.Sum256([]byte("traverse console session\x00" + secret))
	return hex.EncodeToString(d[:])
}

// consoleMinter mints the ICE tester's credential as the Tokens resource would.
type consoleMinter struct {
	s   *Server
	svc *issuer.Service
}

func (m consoleMinter) Mint(ctx context.Context, accountSid string, ttl time.Duration) (console.Credential, error) {
	tok, err := m.svc.CreateToken(ctx, accountSid, ttl)
	if err != nil {
		return console.Credential{}, err
	}
	uris := make([]string, len(tok.ICEServers))
	for i, e := range tok.ICEServers {
		uris[i] = e.URLs
	}
	uris = m.s.everyTLSListener(uris)
	return console.Credential{Username: tok.Username, Password: tok.Password, URIs: uris, TTL: tok.TTL}, nil
}

// everyTLSListener adds to the URIs handed out (which name one TLS port,
// 443 when listened on) a turns: URI for each other TLS listener, so the ICE
// tester tries TLS on 443 and on 5349. Explicit issuer.ice_servers are left
// as they are.
func (s *Server) everyTLSListener(uris []string) []string {
	s.mu.Lock()
	explicit := len(s.cfg.Issuer.ICEServers) > 0
	s.mu.Unlock()
	if explicit || s.relay == nil || s.certs == nil {
		return uris
	}
	var host string
	for _, u := range uris {
		if rest, ok := strings.CutPrefix(u, "turns:"); ok {
			hp, _, _ := strings.Cut(rest, "?")
			if h, _, err := net.SplitHostPort(hp); err == nil {
				host = h
				break
			}
		}
	}
	if host == "" {
		return uris
	}
	for _, a := range s.relay.Addrs().TLS {
		_, port, _ := net.SplitHostPort(a.String())
		u := "turns:" + net.JoinHostPort(host, port) + "?transport=tcp"
		if !slices.Contains(uris, u) {
			uris = append(uris, u)
		}
	}
	return uris
}

// localSessions are this node's live allocations (the usage service will
// list every node's).
type localSessions struct{ s *Server }

func (l localSessions) List(context.Context) ([]console.Session, error) {
	if l.s.relay == nil {
		return nil, nil
	}
	node := l.s.nodeName()
	var out []console.Session
	for _, a := range l.s.relay.Allocations() {
		cs := console.Session{
			ID: a.ID, Username: a.Username, Transport: a.Transport, Client: a.Client,
			Relayed: a.Relayed.String(), Node: node, Created: a.Created, Expires: a.Expires,
		}
		// A TURN REST username is "<expiry>:<user>"; issuer-minted users
		// start with the AccountSid.
		if _, user, ok := strings.Cut(a.Username, ":"); ok {
			cs.Account, _ = auth.AccountOf(user)
		}
		out = append(out, cs)
	}
	return out, nil
}

func (l localSessions) Kill(_ context.Context, id string) error {
	if l.s.relay == nil || !l.s.relay.CloseAllocation(id) {
		return console.ErrNotFound
	}
	return nil
}

// localNode is this process, the one node until the fleet registry exists.
type localNode struct{ s *Server }

func (n localNode) Nodes(context.Context) ([]console.Node, error) {
	node := console.Node{Name: n.s.nodeName(), Healthy: n.s.ready.Load(), LastSeen: n.s.now()}
	if r := n.s.relay; r != nil {
		node.Addr = r.PublicIP().String()
		node.Allocations = r.AllocationCount()
		node.PortsUsed, node.PortsTotal = r.PortsInUse()
	}
	return []console.Node{node}, nil
}

func (s *Server) nodeName() string {
	h, err := os.Hostname()
	if err != nil {
		return "this node"
	}
	return h
}

// servedCertificates is the certificate the TLS listeners serve (files or ACME).
type servedCertificates struct{ s *Server }

func (f servedCertificates) Certificates(context.Context) ([]console.Certificate, error) {
	if f.s.certs == nil {
		return nil, nil
	}
	leaf := f.s.certs.Leaf()
	if leaf == nil {
		return nil, nil
	}
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	f.s.mu.Lock()
	source := "file " + f.s.cfg.TLS.Cert
	f.s.mu.Unlock()
	if f.s.certs.ACME() {
		source = "ACME"
	}
	return []console.Certificate{{
		Subject: leaf.Subject.CommonName, Names: names, Issuer: leaf.Issuer.CommonName,
		Source: source, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
	}}, nil
}

// ConsoleURL is the console's address on the bound issuer listener, or ""
// when the console or the issuer is off.
func (s *Server) ConsoleURL() string {
	if s.issuer == nil || s.issuer.console == nil {
		return ""
	}
	scheme := "http"
	if s.certs != nil {
		scheme = "https"
	}
	return scheme + "://" + s.issuer.ln.Addr().String() + console.Prefix
}
