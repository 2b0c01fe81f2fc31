package fleet

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// every runs step every interval (each bounded by interval) until ctx is
// done. A failure is logged once per outage, as failMsg, and the recovery
// as okMsg; the step is retried at the next interval.
func every(ctx context.Context, interval time.Duration, log *zap.Logger, failMsg, okMsg string, step func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, interval)
		err := step(sctx)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			log.Warn(failMsg, zap.Error(err))
			failing = true
		case err == nil && failing:
			log.Info(okMsg)
			failing = false
		}
	}
}
