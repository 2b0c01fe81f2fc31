package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/console"
	"github.com/traverse/traverse/fleet"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
)

// This file adapts the issuer, the relay, the fleet view, the usage rows
// and the certificate manager to the console's interfaces: the console
// imports none of them.

// newConsole builds the console for the issuer's listener, or nil when
// console.enabled is false.
func newConsole(s *Server, svc *issuer.Service, st store.Store, cfg config.Config) (*console.Console, error) {
	if !cfg.Console.Enabled {
		return nil, nil
	}
	opts := console.Options{
		Auth:       consoleAuth{svc},
		Minter:     consoleMinter{s, svc},
		Sessions:   fleetSessions{s, svc},
		Nodes:      fleetNodes{s},
		Usage:      storeUsage{st, s.now},
		Metrics:    s.reg,
		SessionTTL: cfg.Console.SessionTTL,
		Log:        s.log.Named("console"),
		Now:        s.now,
	}
	if s.certs != nil {
		opts.Certificates = servedCertificates{s}
	}
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

// fleetSessions are the live allocations of every node: this node's as
// the relay has them now, and the others' as they last published them
// (usage.flush_interval). A kill of one here is immediate; of another
// node's, it goes through the store as a revocation that node acts on.
type fleetSessions struct {
	s   *Server
	svc *issuer.Service
}

func (f fleetSessions) List(ctx context.Context) ([]console.Session, error) {
	var out []console.Session
	local := map[string]bool{}
	if f.s.relay != nil {
		node := f.s.nodeName()
		for _, a := range f.s.relay.Allocations() {
			local[a.ID] = true
			out = append(out, console.Session{
				ID: a.ID, Account: a.Account, Username: a.Username, Transport: a.Transport,
				Client: a.Client.String(), Relayed: a.Relay.String(), Node: node, Created: a.Created, Expires: a.Expires,
			})
		}
	}
	published, err := f.svc.Allocations(ctx, "")
	if err != nil {
		return out, err
	}
	for _, a := range published {
		if local[a.ID] {
			continue
		}
		out = append(out, console.Session{
			ID: a.ID, Account: a.AccountSid, Username: a.Username, Transport: a.Transport,
			Client: a.Client, Relayed: a.Relay, Node: a.Node, Created: a.Created, Expires: a.Expires,
		})
	}
	return out, nil
}

func (f fleetSessions) Kill(ctx context.Context, id string) error {
	if f.s.relay != nil && f.s.relay.Kill(id) {
		return nil
	}
	if err := f.svc.KillAllocation(ctx, "", id); err != nil {
		if errors.Is(err, issuer.ErrNotFound) {
			return console.ErrNotFound
		}
		return err
	}
	return nil
}

// fleetNodes are the fleet's nodes as this issuer's view has them, or this
// process alone when it keeps no view.
type fleetNodes struct{ s *Server }

func (n fleetNodes) Nodes(context.Context) ([]console.Node, error) {
	view := n.s.FleetNodes()
	if len(view) == 0 {
		node := console.Node{Name: n.s.nodeName(), Healthy: n.s.ready.Load(), LastSeen: n.s.now()}
		if r := n.s.relay; r != nil {
			node.Addr = r.PublicIP().String()
			node.Allocations = r.AllocationCount()
			node.PortsUsed, node.PortsTotal = r.PortsInUse()
		}
		return []console.Node{node}, nil
	}
	var out []console.Node
	for _, f := range view {
		node := console.Node{Name: f.ID, Addr: f.PublicHost, Healthy: f.Status == fleet.StatusServing,
			Allocations: f.Allocations, LastSeen: f.LastHeartbeat}
		if r := n.s.relay; r != nil && f.ID == n.s.NodeID() {
			node.PortsUsed, node.PortsTotal = r.PortsInUse()
		}
		out = append(out, node)
	}
	return out, nil
}

// storeUsage sums every account's hourly usage rows into days.
type storeUsage struct {
	st  store.Store
	now func() time.Time
}

func (u storeUsage) Usage(ctx context.Context, days int) ([]console.UsageDay, error) {
	accounts, err := u.st.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	sids := make([]string, 0, len(accounts))
	for _, a := range accounts {
		sids = append(sids, a.Sid)
	}
	to := u.now().UTC().Truncate(time.Hour).Add(time.Hour)
	rows, err := u.st.ListUsage(ctx, sids, to.AddDate(0, 0, -days), to)
	if err != nil {
		return nil, err
	}
	type key struct{ day, account string }
	sums := map[key]int{}
	var out []console.UsageDay
	for _, r := range rows {
		k := key{r.Hour.Format(time.DateOnly), r.AccountSid}
		i, ok := sums[k]
		if !ok {
			i = len(out)
			sums[k] = i
			out = append(out, console.UsageDay{Day: k.day, Account: k.account})
		}
		out[i].BytesToPeer += r.BytesSent
		out[i].BytesFromPeer += r.BytesReceived
	}
	return out, nil
}

// nodeName is this node's name in the sessions and nodes tables: the name
// its usage rows and published allocations carry.
func (s *Server) nodeName() string {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	return usageNode(cfg)
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
