package server

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/console"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
	_ "github.com/traverse/traverse/store/postgres" // the shared store for several nodes
	_ "github.com/traverse/traverse/store/sqlite"   // the embedded default store
)

// issuerPart is the issuer's listener, HTTP server and store.
type issuerPart struct {
	s     *Server
	ln    net.Listener
	srv   *http.Server
	store store.Store
	svc   *issuer.Service
	// console is served on the same listener; nil when console.enabled is false.
	console *console.Console
}

func newIssuerPart(ctx context.Context, s *Server, cfg config.Config) (_ *issuerPart, err error) {
	p := &issuerPart{s: s}
	defer func() {
		if err != nil {
			p.close(context.Background())
		}
	}()
	if p.ln, err = net.Listen("tcp", cfg.Issuer.Listen); err != nil {
		return nil, fmt.Errorf("issuer.listen %s: %w", cfg.Issuer.Listen, err)
	}
	if p.store, err = store.OpenConfigured(ctx, cfg.DataDir, cfg.Store.DSN, cfg.Store.EncryptionKey); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if s.fleet, err = newFleetView(s, cfg, p.store); err != nil {
		return nil, err
	}
	var proxies []netip.Prefix
	for _, c := range cfg.Issuer.TrustedProxies {
		pfx, err := config.ParsePrefix(c) // checked by Validate
		if err != nil {
			return nil, err
		}
		proxies = append(proxies, pfx)
	}
	// Only the issuer's authentication lookups may outlive an outage; the
	// fleet and the CLI see the store as it is.
	outageAuth := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "traverse_issuer_outage_auth_total",
		Help: "Accounts and API keys authenticated from memory while the store was unreachable (issuer.outage_grace).",
	})
	if err := s.reg.Register(outageAuth); err != nil {
		return nil, err
	}
	p.svc, err = issuer.New(issuer.Options{
		Store:          store.WithOutageGrace(p.store, cfg.Issuer.OutageGrace, s.now, outageAuth.Inc),
		Secrets:        func() *auth.Secrets { return s.secrets.Load() },
		RelayURIs:      s.relayURIs,
		TrustedProxies: proxies,
		MaxTTL:         cfg.Auth.MaxTTL,
		Log:            s.log.Named("issuer"),
		Registerer:     s.reg,
		Now:            s.now,
		CORSOrigins:    cfg.Issuer.CORSOrigins,
		Usage:          issuerUsageOptions(cfg),

		TokensPerSecond: cfg.Issuer.TokensPerSecond,
		TokensBurst:     cfg.Issuer.TokensBurst,
	})
	if err != nil {
		return nil, err
	}
	// Its ErrorLog goes to zap as "issuer.http", at debug: what it reports
	// (bad TLS handshakes, malformed requests) is any client's doing.
	if p.console, err = newConsole(s, p.svc, p.store, cfg); err != nil {
		return nil, err
	}
	p.srv = issuer.NewHTTPServer(cfg.Issuer.Listen, withConsole(p.svc.Handler(), p.console), s.log.Named("issuer"))
	return p, nil
}

func (p *issuerPart) serve() error {
	return serveHTTP(p.srv, p.ln, p.s.certs)
}

func (p *issuerPart) close(ctx context.Context) {
	if p.srv != nil {
		_ = p.srv.Shutdown(ctx)
	} else if p.ln != nil {
		_ = p.ln.Close()
	}
	if p.console != nil {
		p.console.Close()
	}
	if p.store != nil {
		_ = p.store.Close()
	}
}

// Store is the issuer's store, or nil when the issuer is off.
func (s *Server) Store() store.Store {
	if s.issuer == nil {
		return nil
	}
	return s.issuer.store
}

// Issuer is the issuer service, or nil when the issuer is off.
func (s *Server) Issuer() *issuer.Service {
	if s.issuer == nil {
		return nil
	}
	return s.issuer.svc
}

// IssuerAddr is the bound issuer address, or nil.
func (s *Server) IssuerAddr() net.Addr {
	if s.issuer == nil {
		return nil
	}
	return s.issuer.ln.Addr()
}

func issuerRestartNeeded(old, cfg config.Config) []string {
	var out []string
	if old.Issuer.Listen != cfg.Issuer.Listen {
		out = append(out, "issuer.listen")
	}
	if old.Issuer.Enabled != cfg.Issuer.Enabled {
		out = append(out, "issuer.enabled")
	}
	if old.Store != cfg.Store || old.DataDir != cfg.DataDir {
		out = append(out, "store")
	}
	if old.Issuer.TokensPerSecond != cfg.Issuer.TokensPerSecond || old.Issuer.TokensBurst != cfg.Issuer.TokensBurst {
		out = append(out, "issuer.tokens_per_second/tokens_burst")
	}
	// The fleet view and the client-address policy are built once;
	// node.weight and node.public_host go out with the next heartbeat.
	for _, c := range []struct {
		changed bool
		key     string
	}{
		{!slices.Equal(old.Issuer.TrustedProxies, cfg.Issuer.TrustedProxies), "issuer.trusted_proxies"},
		{!maps.Equal(old.Issuer.RegionByCIDR, cfg.Issuer.RegionByCIDR), "issuer.region_by_cidr"},
		{old.Issuer.RelaysPerToken != cfg.Issuer.RelaysPerToken, "issuer.relays_per_token"},
		{old.Issuer.OutageGrace != cfg.Issuer.OutageGrace, "issuer.outage_grace"},
		{old.Node.Region != cfg.Node.Region, "node.region"},
		{old.Node.Heartbeat != cfg.Node.Heartbeat, "node.heartbeat"},
	} {
		if c.changed {
			out = append(out, c.key)
		}
	}
	return out
}

func iceURIs(host string, udp, tcp, tlsPort int) []string {
	return issuer.DefaultURIs(host, udp, tcp, tlsPort)
}
