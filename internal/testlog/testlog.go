// Package testlog gives tests a zap logger that writes to the test's log
// until the test has ended.
package testlog

import (
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New logs to t until the test's last cleanup has run, and drops what comes
// later. pion's read loops outlive its Server.Close by a moment (pion does
// not wait for them), and a line one of them logs after the test has ended
// would panic in t.Log (zaptest's logger does that).
func New(t testing.TB) *zap.Logger {
	w := &writer{t: t}
	t.Cleanup(func() { w.done.Store(true) }) // registered before the server's: runs after it
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.DebugLevel))
}

type writer struct {
	t    testing.TB
	done atomic.Bool
}

func (w *writer) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
