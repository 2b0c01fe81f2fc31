package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/traverse/traverse/certs"
	"github.com/traverse/traverse/relay"
)

// tlsConfig is the one tls.Config of the TURN TLS listeners and the
// issuer's HTTPS: the certificate comes from m at each handshake, so a
// renewed or reloaded one is served from the next handshake on.
func tlsConfig(m *certs.Manager) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   relay.AEADCipherSuites, // the issuer's HTTPS too: no CBC-SHA1
		GetCertificate: m.GetCertificate,
		// stun.turn is RFC 7443's; acme-tls/1 lets the CA validate
		// TLS-ALPN-01 on the TURN port. No ALPN at all is served too.
		NextProtos: []string{certs.ProtoTURN, certs.ProtoACMETLS},
	}
}

// DevCertFile is the name, under data_dir, of --dev's self-signed
// certificate: the file a client must trust to reach the issuer.
const DevCertFile = "dev-cert.pem"

// DevCertificate makes (once) a self-signed certificate for localhost and
// the given IPs under dir, for `traverse serve --dev`, and returns the paths.
func DevCertificate(dir string, ips ...net.IP) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, DevCertFile), filepath.Join(dir, "dev-key.pem")
	if _, err := os.Stat(certFile); err == nil {
		if _, err := os.Stat(keyFile); err == nil {
			return certFile, keyFile, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "traverse dev"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
