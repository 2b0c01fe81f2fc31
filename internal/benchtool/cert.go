package main

import (
	"os"

	"github.com/traverse/traverse/server"
)

// selfSignedCert writes the same self-signed certificate `serve --dev` uses
// (127.0.0.1 among its names) into dir, for the TLS listeners of both
// servers (turnutils_uclient -S does not verify it). The key is made
// readable by coturn, which may drop privileges.
func selfSignedCert(dir string) (certFile, keyFile string, err error) {
	if certFile, keyFile, err = server.DevCertificate(dir); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.Chmod(keyFile, 0o644)
}
