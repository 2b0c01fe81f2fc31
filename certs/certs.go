// Package certs serves traverse's TLS certificate from one of two sources:
// PEM files, re-read when they change on disk (certbot renewals need no
// SIGHUP), or ACME through certmagic, answering TLS-ALPN-01 on the TURN TLS
// listener itself. Either way handshakes ask one GetCertificate, so a new
// certificate takes effect on the next handshake and live connections keep
// theirs.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/config"
)

// ALPN protocols offered by the TURN TLS listener: RFC 7443's stun.turn, and
// acme-tls/1 so that an ACME CA can validate TLS-ALPN-01 on the TURN port.
const (
	ProtoTURN    = "stun.turn"
	ProtoACMETLS = "acme-tls/1"
)

// ErrNoCertificate is returned to handshakes while no certificate is loaded
// (ACME has not obtained one yet).
var ErrNoCertificate = errors.New("certs: no certificate yet")

// Options configure a Manager.
type Options struct {
	TLS     config.TLS
	DataDir string
	Log     *zap.Logger
	// PollInterval is how often certificate files are checked for changes.
	// Default 5s.
	PollInterval time.Duration
	// RetryInterval is the first wait after a failed ACME order; it doubles
	// up to 10 minutes. Default 1 minute.
	RetryInterval time.Duration
	// RenewCheckInterval is how often ACME certificates are checked for
	// renewal. Default certmagic's (10 minutes).
	RenewCheckInterval time.Duration
}

// Manager hands out the current certificate.
type Manager struct {
	log   *zap.Logger
	files *fileSource // nil with ACME
	acme  *acmeSource // nil with files

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New loads the certificate files (a bad file fails here) or prepares ACME;
// nothing runs in the background until Start.
func New(opts Options) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Minute
	}
	m := &Manager{log: opts.Log}
	var err error
	if opts.TLS.ACME.Enabled() {
		m.acme, err = newACMESource(opts)
	} else {
		m.files, err = newFileSource(opts)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Start watches the files, or starts ordering and renewing with ACME.
// alpnAddr is the TURN TLS listener that answers TLS-ALPN-01 ("host:port"
// as bound); empty lets certmagic bind 443 itself.
func (m *Manager) Start(alpnAddr string) {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if m.acme != nil {
			m.acme.run(ctx, alpnAddr)
		} else {
			m.files.watch(ctx)
		}
	}()
}

// Close stops the background work.
func (m *Manager) Close() {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	if m.acme != nil {
		m.acme.close()
	}
}

// GetCertificate is for tls.Config: the current certificate, or the ACME
// challenge certificate when the CA validates TLS-ALPN-01.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.acme != nil {
		return m.acme.getCertificate(hello)
	}
	return m.files.current(), nil
}

// Missing says what keeps TLS from serving ("" when a certificate is
// loaded), for /readyz.
func (m *Manager) Missing() string {
	if m.acme != nil {
		return m.acme.missing()
	}
	return ""
}

// NotAfter is the end of the served certificate's validity, or the zero
// time while there is none.
func (m *Manager) NotAfter() time.Time {
	if leaf := m.Leaf(); leaf != nil {
		return leaf.NotAfter
	}
	return time.Time{}
}

// Leaf is the served certificate, or nil while there is none.
func (m *Manager) Leaf() *x509.Certificate {
	if m.acme != nil {
		return m.acme.leaf()
	}
	c := m.files.current()
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// ACME reports whether the certificate comes from ACME rather than files.
func (m *Manager) ACME() bool { return m.acme != nil }

// Reload re-reads the certificate files now (SIGHUP, or new paths). ACME
// settings need a restart; Reload ignores them.
func (m *Manager) Reload(t config.TLS) error {
	if m.files == nil {
		return nil
	}
	return m.files.reload(t.Cert, t.Key)
}
