package usage

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Meter's and Watch's Prometheus series.
type metrics struct {
	buffered      prometheus.Gauge
	dropped       prometheus.Counter
	flushes       *prometheus.CounterVec // result
	unbilledBytes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "traverse_usage_buffered_rows", Help: "Usage rows (account and hour) waiting to be written to the store."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_usage_dropped_rows_total", Help: "Usage rows lost: beyond usage.max_buffered_rows during a store outage, or unwritten at shutdown."}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_usage_flushes_total", Help: "Usage flushes to the store, by result (ok, error)."}, []string{"result"}),
		unbilledBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_usage_unbilled_bytes_total", Help: "Bytes relayed for usernames that name no account while usage.default_account is empty."}),
	}
	m.flushes.WithLabelValues("ok")
	m.flushes.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.buffered, m.dropped, m.flushes, m.unbilledBytes)
	}
	return m
}
