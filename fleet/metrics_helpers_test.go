package fleet_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// sample finds one sample of name (with label=value when label is set).
func sample(t *testing.T, reg *prometheus.Registry, name, label, value string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m
				}
			}
		}
	}
	t.Fatalf("no sample %s{%s=%q}", name, label, value)
	return nil
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return sample(t, reg, name, "", "").GetGauge().GetValue()
}

// value is the counter or gauge sample name{label=value}.
func value(t *testing.T, reg *prometheus.Registry, name, label, v string) float64 {
	m := sample(t, reg, name, label, v)
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}
