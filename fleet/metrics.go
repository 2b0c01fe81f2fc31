package fleet

import "github.com/prometheus/client_golang/prometheus"

// viewMetrics are an issuer's fleet metrics. Nodes are few, so a node label
// is fine.
type viewMetrics struct {
	nodes         *prometheus.GaugeVec   // status
	chosen        *prometheus.CounterVec // node
	refreshErrors prometheus.Counter
}

func newViewMetrics(reg prometheus.Registerer, age func() float64) (*viewMetrics, error) {
	m := &viewMetrics{
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "traverse_fleet_nodes",
			Help: "Fleet nodes in the last view read, by state: serving, draining, down.",
		}, []string{"state"}),
		chosen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_fleet_chosen_total",
			Help: "Times a node was listed in a credential's ice_servers, by node id.",
		}, []string{"node"}),
		refreshErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_fleet_view_errors_total",
			Help: "Failed reads of the fleet registry (the view keeps answering from its last read).",
		}),
	}
	viewAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "traverse_fleet_view_age_seconds",
		Help: "Age of the fleet view credentials are chosen from: grows while the store is unreachable.",
	}, age)
	for _, s := range statuses {
		m.nodes.WithLabelValues(string(s))
	}
	for _, c := range []prometheus.Collector{m.nodes, m.chosen, m.refreshErrors, viewAge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
