package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/term"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/server"
)

// PrimaryAccountFile is where the primary account's SID and auth token go
// (under data_dir) when stdout is not a terminal.
const PrimaryAccountFile = "primary-account.txt"

// printFirstStart creates the primary account when the store is empty and
// shows its SID and auth token once, with a ready curl line. It never writes
// them to the log. On a terminal it prints them to w. Otherwise w is most
// likely a service log (the systemd journal, docker logs) that more people
// read than should hold the token, so they go to a 0600 file in data_dir
// and w gets only the file's path and how to delete it.
func printFirstStart(ctx context.Context, w io.Writer, terminal bool, srv *server.Server, cfg config.Config, dev bool) error {
	svc := srv.Issuer()
	if svc == nil {
		return nil
	}
	acct, created, err := svc.EnsurePrimaryAccount(ctx)
	if err != nil || !created {
		return err
	}
	msg := issuer.FirstStartMessage(acct, issuerURL(srv.IssuerAddr(), cfg), devCA(cfg, dev))
	if terminal {
		_, err := fmt.Fprint(w, msg)
		return err
	}
	path, err := filepath.Abs(filepath.Join(cfg.DataDir, PrimaryAccountFile))
	if err != nil {
		return err
	}
	if err := writePrivate(path, []byte(msg)); err != nil {
		return fmt.Errorf("write the primary account's token: %w (`traverse accounts show %s --show-token` prints it)", err, acct.Sid)
	}
	_, err = fmt.Fprintf(w, `Created the primary account. stdout is not a terminal, so its SID and auth token
are not printed here but written to %s (mode 0600).
Read it, keep the token somewhere safe, then delete the file:
  rm %s
`, path, path)
	return err
}

// issuerURL is the issuer's base URL for the curl line; an unspecified bind
// address becomes loopback, which the host can always reach.
func issuerURL(addr net.Addr, cfg config.Config) string {
	scheme := "http"
	if cfg.TLS.Enabled() {
		scheme = "https"
	}
	host, port := "127.0.0.1", 0
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = ta.Port
		if !ta.IP.IsUnspecified() {
			host = ta.IP.String()
		}
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// devCA is --dev's self-signed certificate, which curl must be told to trust,
// as an absolute path; "" when the certificate is the operator's own.
func devCA(cfg config.Config, dev bool) string {
	if !dev || cfg.TLS.Cert != filepath.Join(cfg.DataDir, server.DevCertFile) {
		return ""
	}
	if abs, err := filepath.Abs(cfg.TLS.Cert); err == nil {
		return abs
	}
	return cfg.TLS.Cert
}

// writePrivate writes data to path with mode 0600, replacing any older file:
// a temporary file (created 0600) renamed into place, so the token is never
// readable by others, even for a moment.
func writePrivate(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".primary-account-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }() // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// isTerminal reports whether w is a terminal (stdout in an interactive shell).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
