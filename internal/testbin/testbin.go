// Package testbin builds the traverse binary once for a test package that
// drives it as an operator would (e2e, packaging).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds ../cmd/traverse into a temporary directory, sets *binary to
// its path, runs the package's tests and exits with their code. Call it
// from TestMain.
func Main(m *testing.M, binary *string) {
	dir, err := os.MkdirTemp("", "traverse-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*binary = filepath.Join(dir, "traverse")
	build := exec.Command("go", "build", "-o", *binary, "../cmd/traverse")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build traverse:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
