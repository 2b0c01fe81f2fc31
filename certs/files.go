package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// fileSource serves a certificate from PEM files and polls them: certbot
// replaces the files (or the symlinks to them) on renewal, and polling sees
// that on every file system, where inotify misses symlink swaps and network
// mounts. Two small files read every few seconds cost nothing.
type fileSource struct {
	log      *zap.Logger
	interval time.Duration
	cert     atomic.Pointer[tls.Certificate]

	mu                sync.Mutex
	certFile, keyFile string
	certPEM, keyPEM   []byte // what is being served
	badCert, badKey   []byte // the last pair that failed, logged once
}

func newFileSource(opts Options) (*fileSource, error) {
	f := &fileSource{log: opts.Log, interval: opts.PollInterval}
	if err := f.reload(opts.TLS.Cert, opts.TLS.Key); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileSource) current() *tls.Certificate { return f.cert.Load() }

// reload loads the files at once and reports a bad pair as an error.
func (f *fileSource) reload(certFile, keyFile string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, k, err := readPair(certFile, keyFile)
	if err == nil {
		err = f.useLocked(c, k)
	}
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", certFile, keyFile, err)
	}
	f.certFile, f.keyFile = certFile, keyFile
	return nil
}

func (f *fileSource) useLocked(certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	f.cert.Store(&cert)
	f.certPEM, f.keyPEM = certPEM, keyPEM
	return nil
}

func readPair(certFile, keyFile string) ([]byte, []byte, error) {
	c, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	k, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	return c, k, nil
}

func (f *fileSource) watch(ctx context.Context) {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.check()
		}
	}
}

// check swaps in changed files. A bad pair keeps the running certificate
// and is logged once, not on every poll: certbot writes the certificate and
// the key one after the other, so a poll in between sees a mismatch that
// the next poll resolves.
func (f *fileSource) check() {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, k, err := readPair(f.certFile, f.keyFile)
	if err != nil {
		f.logBadLocked([]byte(err.Error()), nil, err)
		return
	}
	if bytes.Equal(c, f.certPEM) && bytes.Equal(k, f.keyPEM) {
		return
	}
	if err := f.useLocked(c, k); err != nil {
		f.logBadLocked(c, k, err)
		return
	}
	f.badCert, f.badKey = nil, nil
	f.log.Info("certificate reloaded", zap.String("cert", f.certFile), zap.Time("not_after", f.cert.Load().Leaf.NotAfter))
}

func (f *fileSource) logBadLocked(c, k []byte, err error) {
	if bytes.Equal(c, f.badCert) && bytes.Equal(k, f.badKey) {
		return
	}
	f.badCert, f.badKey = c, k
	f.log.Error("certificate files changed but cannot be loaded: keeping the running certificate",
		zap.String("cert", f.certFile), zap.String("key", f.keyFile), zap.Error(err))
}
