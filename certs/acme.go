package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// maxRetry caps the wait between failed ACME orders.
const maxRetry = 10 * time.Minute

// acmeSource obtains and renews the certificate with certmagic. certmagic's
// cache serves handshakes and its maintenance loop renews in the background;
// its file storage locks each order, so nodes sharing the storage directory
// order a certificate once.
type acmeSource struct {
	log     *zap.Logger
	domains []string
	retry   time.Duration
	cache   *certmagic.Cache
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer

	mu      sync.Mutex
	ok      bool  // a certificate has been obtained or loaded
	lastErr error // the last failed order, for /readyz
}

func newACMESource(opts Options) (*acmeSource, error) {
	a := opts.TLS.ACME
	storage := a.Storage
	if storage == "" {
		storage = filepath.Join(opts.DataDir, "acme")
	}
	var roots *x509.CertPool
	if a.CARoots != "" {
		pem, err := os.ReadFile(a.CARoots)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.ca_roots: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.acme.ca_roots: no PEM certificate in %s", a.CARoots)
		}
	}
	log := opts.Log.Named("acme")
	s := &acmeSource{log: log, domains: a.Domains, retry: opts.RetryInterval}
	var magic *certmagic.Config
	s.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		RenewCheckInterval: opts.RenewCheckInterval,
		Logger:             log,
	})
	magic = certmagic.New(s.cache, certmagic.Config{
		Storage:           &certmagic.FileStorage{Path: storage},
		DefaultServerName: a.Domains[0],
		Logger:            log,
		OnEvent:           s.onEvent,
	})
	s.magic = magic
	s.issuer = certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:                   a.CA,
		Email:                a.Email,
		Agreed:               true,
		TrustedRoots:         roots,
		DisableHTTPChallenge: a.HTTPPort == 0,
		AltHTTPPort:          a.HTTPPort,
		Logger:               log,
	})
	magic.Issuers = []certmagic.Issuer{s.issuer}
	return s, nil
}

// run points TLS-ALPN-01 at the TURN listener, then orders (or loads from
// storage) the certificate, retrying with backoff until it has one. From
// then on certmagic renews it.
func (s *acmeSource) run(ctx context.Context, alpnAddr string) {
	if host, port, err := net.SplitHostPort(alpnAddr); err == nil {
		// The listener holds the port, so certmagic finds it taken and
		// leaves the challenge to our GetCertificate.
		s.issuer.ListenHost = host
		s.issuer.AltTLSALPNPort, _ = strconv.Atoi(port)
	}
	wait := s.retry
	for {
		err := s.magic.ManageSync(ctx, s.domains)
		s.mu.Lock()
		s.ok, s.lastErr = err == nil, err
		s.mu.Unlock()
		if err == nil {
			s.log.Info("certificate ready", zap.Strings("domains", s.domains))
			return
		}
		s.log.Error("certificate order failed: turns: is down until it succeeds",
			zap.Strings("domains", s.domains), zap.Duration("retry_in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxRetry)
	}
}

func (s *acmeSource) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		s.log.Info("certificate obtained", zap.Any("identifier", data["identifier"]), zap.Any("renewal", data["renewal"]))
	case "cert_failed":
		s.log.Warn("certificate renewal failed", zap.Any("identifier", data["identifier"]), zap.Any("error", data["error"]))
	}
	return nil
}

func (s *acmeSource) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := s.magic.GetCertificate(hello)
	if err != nil && !s.ready() {
		return nil, fmt.Errorf("%w: %v", ErrNoCertificate, err)
	}
	return c, err
}

func (s *acmeSource) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok
}

func (s *acmeSource) missing() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ok {
		return ""
	}
	msg := "tls: no certificate yet for " + strings.Join(s.domains, ", ")
	if s.lastErr != nil {
		msg += " (last attempt: " + s.lastErr.Error() + ")"
	} else {
		msg += " (ordering)"
	}
	return msg
}

// leaf is the newest certificate the cache holds for the first domain.
func (s *acmeSource) leaf() *x509.Certificate {
	var out *x509.Certificate
	for _, c := range s.cache.AllMatchingCertificates(s.domains[0]) {
		if c.Leaf != nil && (out == nil || c.Leaf.NotAfter.After(out.NotAfter)) {
			out = c.Leaf
		}
	}
	return out
}

func (s *acmeSource) close() { s.cache.Stop() }
