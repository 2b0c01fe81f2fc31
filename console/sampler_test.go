package console

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSamplerRates: the chart data are the registry's gauges as read and
// its counters as per-second rates (bits for bytes), by reason, over a ring
// that keeps the last hour.
func TestSamplerRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	active := prometheus.NewGauge(prometheus.GaugeOpts{Name: metricAllocations})
	created := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricCreated}, []string{"transport"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricBytes}, []string{"direction"})
	relayAuth := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricRelayAuth}, []string{"result"})
	denied := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPeerDenied}, []string{"reason"})
	reg.MustRegister(active, created, bytes, relayAuth, denied)

	now := time.Unix(1_700_000_000, 0)
	s := newSampler(reg, 5*time.Second, time.Hour, func() time.Time { return now })
	s.sample()
	active.Set(3)
	created.WithLabelValues("udp").Add(8)
	created.WithLabelValues("tcp").Add(2)
	bytes.WithLabelValues("to_peer").Add(5000)
	bytes.WithLabelValues("from_peer").Add(2500)
	relayAuth.WithLabelValues("ok").Add(100)
	relayAuth.WithLabelValues("bad_password").Add(5)
	denied.WithLabelValues("builtin").Add(1)
	now = now.Add(5 * time.Second)
	s.sample()

	d := chart(s.points(), s.every)
	if len(d.T) != 2 || d.Allocations[1] != 3 {
		t.Fatalf("allocations %v at %v", d.Allocations, d.T)
	}
	if d.ToPeerBits[0] != nil {
		t.Errorf("first rate %v, want null", *d.ToPeerBits[0])
	}
	for name, got := range map[string]*float64{
		"to_peer bits/s": d.ToPeerBits[1], "from_peer bits/s": d.FromPeer[1], "allocations/s": d.Created[1],
		"turn bad_password/s": d.AuthRefused["turn bad_password"][1], "builtin/s": d.PeerDenied["builtin"][1],
	} {
		want := map[string]float64{"to_peer bits/s": 8000, "from_peer bits/s": 4000, "allocations/s": 2,
			"turn bad_password/s": 1, "builtin/s": 0.2}[name]
		if got == nil || *got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, ok := d.AuthRefused["turn ok"]; ok {
		t.Error("successful authentications charted as refusals")
	}

	// The ring keeps an hour: 721 points at 5 s, oldest dropped first.
	for range 800 {
		now = now.Add(5 * time.Second)
		s.sample()
	}
	pts := s.points()
	if len(pts) != 721 || !pts[len(pts)-1].t.Equal(now) || pts[len(pts)-1].t.Sub(pts[0].t) != time.Hour {
		t.Fatalf("ring holds %d points from %v to %v", len(pts), pts[0].t, pts[len(pts)-1].t)
	}
}
