package usage

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/relay"
	"github.com/traverse/traverse/store"
)

// Revoker is what Watch acts on: the relay.
type Revoker interface {
	SetRevoked(*relay.Revoked) int
	Kill(id string) bool
}

// Watch applies the store's revocations to r until ctx is done: at once
// when the store signals one (store.Usage.WatchRevocations), and every poll
// in any case, the safety net for a lost signal. A store error keeps the
// revocations last read.
func Watch(ctx context.Context, st store.Usage, r Revoker, poll time.Duration, now func() time.Time, log *zap.Logger) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	signal := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		st.WatchRevocations(ctx, func() {
			select {
			case signal <- struct{}{}:
			default:
			}
		})
	}()
	defer wg.Wait()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-signal:
		case <-t.C:
		}
		if err := apply(ctx, st, r, now()); err != nil && ctx.Err() == nil {
			log.Warn("revocations not read; keeping the last ones", zap.Error(err))
		}
	}
}

// apply reads the revocations and hands them to r.
func apply(ctx context.Context, st store.Usage, r Revoker, now time.Time) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := st.ListRevocations(rctx, now)
	if err != nil {
		return err
	}
	rv := &relay.Revoked{Users: map[string]bool{}, Accounts: map[string]bool{}, Keys: map[string]bool{}}
	var kills []string
	for _, v := range list {
		switch v.Kind {
		case store.RevokeUser:
			rv.Users[v.Value] = true
		case store.RevokeAccount:
			rv.Accounts[v.Value] = true
		case store.RevokeKey:
			rv.Keys[v.Value] = true
		case store.RevokeAllocation:
			kills = append(kills, v.Value)
		}
	}
	r.SetRevoked(rv)
	for _, id := range kills {
		r.Kill(id)
	}
	return nil
}
