package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
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
	p.svc, err = issuer.New(issuer.Options{
		Store:       p.store,
		Secrets:     func() *auth.Secrets { return s.secrets.Load() },
		URIs:        s.ICEURIs,
		MaxTTL:      cfg.Auth.MaxTTL,
		Log:         s.log.Named("issuer"),
		Registerer:  s.reg,
		Now:         s.now,
		CORSOrigins: cfg.Issuer.CORSOrigins,
		Usage:       issuerUsageOptions(cfg),
	})
	if err != nil {
		return nil, err
	}
	// Its ErrorLog goes to zap as "issuer.http", at debug: what it reports
	// (bad TLS handshakes, malformed requests) is any client's doing.
	p.srv = issuer.NewHTTPServer(cfg.Issuer.Listen, p.svc.Handler(), s.log.Named("issuer"))
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
	if !slices.Equal(old.Issuer.CORSOrigins, cfg.Issuer.CORSOrigins) {
		out = append(out, "issuer.cors_origins")
	}
	return out
}

func iceURIs(host string, udp, tcp, tlsPort int) []string {
	return issuer.DefaultURIs(host, udp, tcp, tlsPort)
}
