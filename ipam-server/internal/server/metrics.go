package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are braid-ipam-server's Prometheus metrics.
type Metrics struct {
	Allocations *prometheus.CounterVec
	Releases    *prometheus.CounterVec
	Failures    *prometheus.CounterVec
	Latency     prometheus.Histogram
	PoolUsed    *prometheus.GaugeVec
	PoolFree    *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "braid_ipam_allocations_total", Help: "Addresses allocated, by pool.",
		}, []string{"pool"}),
		Releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "braid_ipam_releases_total", Help: "Addresses released, by pool.",
		}, []string{"pool"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "braid_ipam_allocation_failures_total", Help: "Failed allocations, by reason (the Event reason on the pod).",
		}, []string{"reason"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "braid_ipam_allocation_duration_seconds",
			Help:    "From the server first seeing a pod bound to a node to its addresses being recorded on it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		PoolUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "braid_ipam_pool_used", Help: "Addresses of the pool held or cooling down.",
		}, []string{"pool"}),
		PoolFree: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "braid_ipam_pool_free", Help: "Addresses of the pool that can be handed out (float: IPv6 pools are large).",
		}, []string{"pool"}),
	}
	reg.MustRegister(m.Allocations, m.Releases, m.Failures, m.Latency, m.PoolUsed, m.PoolFree)
	return m
}
