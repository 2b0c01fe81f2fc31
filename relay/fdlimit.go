package relay

import (
	"syscall"

	"go.uber.org/zap"

	"github.com/traverse/traverse/config"
)

// fdReserve is what the process holds besides client connections and relay
// sockets: listeners, the store, the metrics and issuer servers, logs.
const fdReserve = 256

// fdNeed is the descriptors the relay may hold at its caps: every stream
// listener full, plus a relay socket per allocation (relay.quota.total, else
// the port range).
func fdNeed(cfg config.Config, streamListeners, maxConns int) uint64 {
	allocs := cfg.Relay.Quota.Total
	if allocs == 0 {
		allocs = cfg.Relay.Ports.Max - cfg.Relay.Ports.Min + 1
	}
	return uint64(streamListeners*maxConns + allocs + fdReserve)
}

// checkFDLimit raises the soft RLIMIT_NOFILE toward the hard limit when the
// relay's caps need more, and warns when even the hard limit is short: the
// accept loops then meet EMFILE under load (they back off and carry on).
func (s *Server) checkFDLimit(need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		s.log.Warn("cannot read the descriptor limit", zap.Error(err))
		return
	}
	if lim.Cur < need && lim.Max > lim.Cur {
		raised := lim
		raised.Cur = min(lim.Max, need)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			s.log.Info("raised the descriptor limit", zap.Uint64("from", lim.Cur), zap.Uint64("to", raised.Cur))
			lim = raised
		}
	}
	if lim.Cur < need {
		s.log.Warn("descriptor limit below what the listeners and allocations may hold: under load accepts will fail (and be retried); raise LimitNOFILE / ulimit -n",
			zap.Uint64("limit", lim.Cur), zap.Uint64("hard_limit", lim.Max), zap.Uint64("need", need))
	}
}
