package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/server"
)

// applyDev turns the embedded defaults into something that runs on a laptop
// or a fresh VM with no preparation: a random secret kept in data_dir (never
// a built-in one), a self-signed certificate, listeners on loopback (those
// the config file does not name), loopback peers allowed when every TURN
// listener is on loopback, and TLS ports below 1024 dropped when not root.
// Each change is announced on w.
func applyDev(cfg *config.Config, named namedListeners, ipv6Loopback bool, w io.Writer) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if len(cfg.Auth.Secrets) == 0 {
		secret, err := devSecret(filepath.Join(cfg.DataDir, "dev-secret"))
		if err != nil {
			return err
		}
		cfg.Auth.Secrets = []string{secret}
		fmt.Fprintf(w, "dev: using the secret in %s\n", filepath.Join(cfg.DataDir, "dev-secret"))
	}
	if !cfg.TLS.Enabled() {
		cert, key, err := server.DevCertificate(cfg.DataDir)
		if err != nil {
			return fmt.Errorf("dev certificate: %w", err)
		}
		cfg.TLS.Cert, cfg.TLS.Key = cert, key
		fmt.Fprintf(w, "dev: self-signed certificate %s (curl --cacert %s)\n", cert, cert)
	}
	// A trial must not be reachable from the network: only the host's own
	// clients may use it, which is also what makes loopback peers safe.
	hosts := []string{"127.0.0.1"}
	if ipv6Loopback {
		hosts = append(hosts, "::1")
	}
	named.each(&cfg.Listen, func(kind string, addrs *[]string) {
		*addrs = onHosts(*addrs, hosts...)
		fmt.Fprintf(w, "dev: listen.%s on loopback only: %s\n", kind, strings.Join(*addrs, " "))
	})
	if os.Geteuid() != 0 {
		var kept []string
		for _, a := range cfg.Listen.TLS {
			if _, p, err := net.SplitHostPort(a); err == nil && privilegedPort(p) {
				fmt.Fprintf(w, "dev: not root, skipping privileged TLS listener %s\n", a)
				continue
			}
			kept = append(kept, a)
		}
		cfg.Listen.TLS = kept
	}
	exposed := cfg.ExposedListeners()
	if len(exposed) == 0 && cfg.Issuer.PublicHost == "" && len(cfg.Issuer.ICEServers) == 0 {
		// The URIs handed out must name where the listeners are, not the
		// host's network address (the default), which no longer answers.
		cfg.Issuer.PublicHost = "127.0.0.1"
		fmt.Fprintln(w, "dev: ICE server URIs name 127.0.0.1 (issuer.public_host), where the listeners are")
	}
	if !cfg.Relay.Peers.AllowLoopback {
		if len(exposed) > 0 {
			fmt.Fprintf(w, "dev: loopback peers stay denied: %s is not on loopback (set relay.peers.allow_loopback: true to allow them anyway)\n", exposed[0])
		} else {
			cfg.Relay.Peers.AllowLoopback = true
			fmt.Fprintln(w, "dev: loopback peers allowed (relay.peers.allow_loopback), as every listener is on loopback")
		}
	}
	return nil
}

// privilegedPort reports whether port (a number) is below 1024 and not 0
// (0 picks a free port, which is never privileged).
func privilegedPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 1024
}

// devSecret reads the dev secret, creating it (0600) on first use.
func devSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= config.MinSecretLen {
			return s, nil
		}
		return "", fmt.Errorf("%s: secret shorter than %d characters", path, config.MinSecretLen)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}
