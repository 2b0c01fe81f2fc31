// Package pionlog routes pion's leveled logs into zap, sampled, so that a
// client that makes pion log on every packet cannot flood the log.
package pionlog

import (
	"fmt"
	"time"

	"github.com/pion/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Factory makes pion loggers that write to a named child of log.
type Factory struct {
	log *zap.Logger
}

// New returns a factory whose loggers keep the first 5 identical messages a
// second and one in 100 after that.
func New(log *zap.Logger) *Factory {
	sampled := log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100)
	}))
	return &Factory{log: sampled.Named("pion")}
}

// NewLogger implements logging.LoggerFactory.
func (f *Factory) NewLogger(scope string) logging.LeveledLogger {
	return &logger{l: f.log.Named(scope).WithOptions(zap.AddCallerSkip(1))}
}

type logger struct{ l *zap.Logger }

func (g *logger) log(lvl zapcore.Level, msg string) {
	if ce := g.l.Check(lvl, msg); ce != nil {
		ce.Write()
	}
}

func (g *logger) logf(lvl zapcore.Level, format string, args ...any) {
	if ce := g.l.Check(lvl, "pion"); ce != nil {
		ce.Message = fmt.Sprintf(format, args...)
		ce.Write()
	}
}

// Trace and Debug both go to debug; pion's errors are mostly about one
// client's packets, so they go to warn.
func (g *logger) Trace(msg string)               { g.log(zapcore.DebugLevel, msg) }
func (g *logger) Tracef(format string, a ...any) { g.logf(zapcore.DebugLevel, format, a...) }
func (g *logger) Debug(msg string)               { g.log(zapcore.DebugLevel, msg) }
func (g *logger) Debugf(format string, a ...any) { g.logf(zapcore.DebugLevel, format, a...) }
func (g *logger) Info(msg string)                { g.log(zapcore.InfoLevel, msg) }
func (g *logger) Infof(format string, a ...any)  { g.logf(zapcore.InfoLevel, format, a...) }
func (g *logger) Warn(msg string)                { g.log(zapcore.WarnLevel, msg) }
func (g *logger) Warnf(format string, a ...any)  { g.logf(zapcore.WarnLevel, format, a...) }
func (g *logger) Error(msg string)               { g.log(zapcore.WarnLevel, msg) }
func (g *logger) Errorf(format string, a ...any) { g.logf(zapcore.WarnLevel, format, a...) }
