package relay

import (
	"crypto/tls"
	"slices"
)

// alpnTURN is the ALPN protocol id of TURN over TLS (RFC 7443).
const alpnTURN = "stun.turn"

// AEADCipherSuites are the TLS 1.2 suites of Mozilla's "intermediate" profile:
// ECDHE with AES-GCM or ChaCha20-Poly1305. The CBC-SHA1 suites Go still
// enables by default are left out. TLS 1.3 suites are Go's own choice.
var AEADCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// turnTLSConfig is the config the TURN-over-TLS listeners serve with: the
// caller's (certificates, other ALPN ids) with TLS 1.2 at least, AEAD
// suites only, and stun.turn offered in ALPN.
func turnTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	c.CipherSuites = AEADCipherSuites
	if !slices.Contains(c.NextProtos, alpnTURN) {
		c.NextProtos = append(slices.Clone(c.NextProtos), alpnTURN)
	}
	return c
}
